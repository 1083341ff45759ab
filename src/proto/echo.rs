//! The echo protocol: raw bytes back unchanged, no framing; each chunk of input is a request.

/// Appends the answer to `data` (the same bytes) to `out`.
#[inline]
pub fn answer(data: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(data);
}
