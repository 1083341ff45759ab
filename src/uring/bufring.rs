//! A provided-buffer ring (`IORING_REGISTER_PBUF_RING`, Linux 5.19+) for multishot receives.
//!
//! Two pieces of memory, both allocated once and never moved or resized while registered:
//! the ring of buffer descriptors (page-aligned, from `mmap`) and one slab of `count * size`
//! bytes cut into `count` buffers. The kernel takes a buffer from the ring's head for each
//! completion and names it by id in the completion's flags; the owner reads it, then gives it
//! back with [`BufRing::recycle`] and makes the returned buffers visible with
//! [`BufRing::publish`] (one release store of the tail per batch).

use std::io;
use std::sync::atomic::{AtomicU16, Ordering};

use io_uring::types::BufRingEntry;
use io_uring::Submitter;

/// The buffers and their descriptor ring. Unregister before dropping ([`BufRing::unregister`]);
/// [`super::Ring`] does that once no operation can use them any more.
pub struct BufRing {
    entries: *mut BufRingEntry,
    map_len: usize,
    mask: u16,
    tail: u16,
    size: usize,
    data: Box<[u8]>,
    bgid: u16,
    registered: bool,
}

impl BufRing {
    /// Maps and registers `count` (a power of two, at most 32768) buffers of `size` bytes as
    /// buffer group `bgid`, all of them available to the kernel.
    pub fn new(sub: &Submitter<'_>, count: u16, size: usize, bgid: u16) -> io::Result<BufRing> {
        if !count.is_power_of_two() || count > 32768 || size == 0 || size > u32::MAX as usize {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "bad buffer ring geometry",
            ));
        }
        let map_len = count as usize * std::mem::size_of::<BufRingEntry>();
        // SAFETY: an anonymous private mapping with no address hint; the result is checked.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                map_len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_ANONYMOUS | libc::MAP_PRIVATE,
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let mut br = BufRing {
            entries: ptr.cast(),
            map_len,
            mask: count - 1,
            tail: 0,
            size,
            data: vec![0u8; count as usize * size].into_boxed_slice(),
            bgid,
            registered: false,
        };
        // SAFETY: `entries` points to `count` descriptors (page-aligned, zeroed by mmap) that
        // stay mapped until `Drop`, after the ring is unregistered (`unregister`, or the ring
        // itself is gone: `Ring` drops this only after unregistering).
        unsafe { sub.register_buf_ring_with_flags(ptr as u64, count, bgid, 0) }?;
        br.registered = true;
        for bid in 0..count {
            br.recycle(bid);
        }
        br.publish();
        Ok(br)
    }

    /// The buffer group id to name in receive operations.
    pub fn bgid(&self) -> u16 {
        self.bgid
    }

    /// Size of each buffer.
    pub fn buf_size(&self) -> usize {
        self.size
    }

    /// The first `len` bytes of buffer `bid`, as filled by the kernel. Only call this for a
    /// buffer named by a completion and not yet recycled (the kernel does not write to it then).
    pub fn get(&self, bid: u16, len: usize) -> &[u8] {
        let start = (bid & self.mask) as usize * self.size;
        &self.data[start..start + len.min(self.size)]
    }

    /// Queues buffer `bid` for the kernel again (visible after [`BufRing::publish`]).
    pub(crate) fn recycle(&mut self, bid: u16) {
        let bid = bid & self.mask;
        let idx = (self.tail & self.mask) as usize;
        let addr = self.data.as_ptr() as u64 + bid as u64 * self.size as u64;
        // SAFETY: `idx <= mask`, so the descriptor is inside the mapping. The kernel only reads
        // descriptors between its head and the published tail; this one is past the published
        // tail until `publish`, so writing it races with nothing.
        let e = unsafe { &mut *self.entries.add(idx) };
        e.set_addr(addr);
        e.set_len(self.size as u32);
        e.set_bid(bid);
        self.tail = self.tail.wrapping_add(1);
    }

    /// Makes the recycled buffers visible to the kernel.
    pub(crate) fn publish(&self) {
        // SAFETY: `entries` is the base of the registered ring; the tail field lives inside the
        // first descriptor, which the mapping covers. The kernel reads it with acquire
        // semantics, so a release store orders the descriptor writes before it.
        unsafe {
            let tail = BufRingEntry::tail(self.entries) as *const AtomicU16;
            (*tail).store(self.tail, Ordering::Release);
        }
    }

    /// Unregisters the group (the kernel forgets the memory). Only call when no operation
    /// selecting from this group can be in flight.
    pub(crate) fn unregister(&mut self, sub: &Submitter<'_>) {
        if self.registered && sub.unregister_buf_ring(self.bgid).is_ok() {
            self.registered = false;
        }
    }

    /// True while the kernel may still use the memory.
    pub fn is_registered(&self) -> bool {
        self.registered
    }
}

impl Drop for BufRing {
    fn drop(&mut self) {
        if self.registered {
            // Still registered (the ring could not be drained): leak both the descriptors and
            // the buffers rather than let the kernel write into freed memory.
            let data = std::mem::take(&mut self.data);
            std::mem::forget(data);
            return;
        }
        // SAFETY: the mapping was created in `new` with this length and is no longer registered.
        unsafe {
            libc::munmap(self.entries.cast(), self.map_len);
        }
    }
}
