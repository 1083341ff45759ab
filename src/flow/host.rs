//! Facts about this host that both ends of a test exchange.

/// This host's name (for telling whether one-way latency compares a clock with itself).
pub(crate) fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}
