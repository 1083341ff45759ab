//! CPU pinning: `--pin` and `--cpus LIST` (`0,2-3`), via `core_affinity`.

use std::collections::BTreeMap;
use std::sync::{Mutex, OnceLock};

use anyhow::{bail, Result};

/// Parses a CPU list such as `0`, `0,1`, `0-3,6`. Every CPU must exist on this machine.
pub(crate) fn parse_cpu_list(text: &str) -> Result<Vec<usize>> {
    let n = super::online_cpus();
    let mut out = Vec::new();
    for part in text.split(',') {
        let part = part.trim();
        if part.is_empty() {
            bail!("invalid CPU list '{text}': empty item");
        }
        let (a, b) = match part.split_once('-') {
            Some((a, b)) => (a.trim(), b.trim()),
            None => (part, part),
        };
        let a: usize = a.parse().map_err(|_| {
            anyhow::anyhow!("invalid CPU list '{text}': '{part}' is not a CPU number")
        })?;
        let b: usize = b.parse().map_err(|_| {
            anyhow::anyhow!("invalid CPU list '{text}': '{part}' is not a CPU number")
        })?;
        if a > b {
            bail!("invalid CPU list '{text}': range '{part}' goes backwards");
        }
        for c in a..=b {
            if c >= n {
                bail!("invalid CPU list '{text}': CPU {c} does not exist (this machine has {n})");
            }
            if !out.contains(&c) {
                out.push(c);
            }
        }
    }
    Ok(out)
}

/// Number of CPUs this process may run on.
pub(crate) fn available_cpus() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

/// Number of CPUs the process's affinity mask allows (`sched_getaffinity` of the process, so
/// `taskset -c 0 netcore ...` gives 1 whichever thread asks); [`available_cpus`] if the kernel
/// will not say.
pub(crate) fn allowed_cpus() -> usize {
    // SAFETY: an all-zero cpu_set_t is a valid (empty) set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid, writable cpu_set_t of the size passed, for the call; getpid
    // has no preconditions.
    let r = unsafe {
        syscall!(sched_getaffinity(
            libc::getpid(),
            std::mem::size_of::<libc::cpu_set_t>(),
            &mut set
        ))
    };
    match r {
        // SAFETY: `set` was filled by the kernel.
        Ok(_) => (unsafe { libc::CPU_COUNT(&set) } as usize).max(1),
        Err(_) => available_cpus(),
    }
}

/// Pins the calling thread to `cpu`. Returns false (and leaves the thread unpinned) if the
/// kernel refused. A pin that holds is noted for [`pinned_threads`].
pub(crate) fn pin_current(cpu: usize) -> bool {
    let ok = core_affinity::set_for_current(core_affinity::CoreId { id: cpu });
    if ok {
        note_pin(cpu);
    }
    ok
}

/// The most threads [`pinned_threads`] remembers (a long-running `recv` or `serve` starts new
/// threads per test; the first ones are kept).
const MAX_NOTED: usize = 256;

fn pins() -> &'static Mutex<BTreeMap<String, usize>> {
    static PINS: OnceLock<Mutex<BTreeMap<String, usize>>> = OnceLock::new();
    PINS.get_or_init(Default::default)
}

fn note_pin(cpu: usize) {
    let t = std::thread::current();
    let name = match t.name() {
        Some(n) => n.to_string(),
        None => format!("{:?}", t.id()),
    };
    let mut p = pins().lock().unwrap_or_else(|e| e.into_inner());
    if p.len() < MAX_NOTED || p.contains_key(&name) {
        p.insert(name, cpu);
    }
}

/// The threads of this process pinned so far (thread name, or its id where it has none, to
/// the CPU of its last pin): what a report's `meta` says about where its threads ran.
pub(crate) fn pinned_threads() -> BTreeMap<String, usize> {
    pins().lock().unwrap_or_else(|e| e.into_inner()).clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists() {
        assert_eq!(parse_cpu_list("0").unwrap(), vec![0]);
        if available_cpus() >= 2 {
            assert_eq!(parse_cpu_list("0-1").unwrap(), vec![0, 1]);
            assert_eq!(parse_cpu_list("1,0,1").unwrap(), vec![1, 0]);
        }
        assert!(allowed_cpus() >= 1 && allowed_cpus() <= crate::sys::online_cpus());
        assert!(parse_cpu_list("").is_err());
        assert!(parse_cpu_list("x").is_err());
        assert!(parse_cpu_list("1-0").is_err());
        assert!(parse_cpu_list("100000").is_err());
    }
}
