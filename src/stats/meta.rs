//! Where a report came from: netcore's version and git revision, the host, its kernel and CPUs,
//! the CPUs the measuring threads were pinned to, the socket sysctls that bound what a test can
//! do, and when. Every report carries one (`meta` in every JSON schema; the first line of every
//! table), so a report from another day or machine can be told apart and compared
//! (`netcore diff`). [`Meta::gather`] is the one place that builds it.

use std::collections::BTreeMap;
use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// The git revision netcore was built from (`build.rs`: `git describe --always --dirty`),
/// "unknown" when built outside a git checkout.
pub(crate) const GIT_REVISION: &str = env!("NETCORE_GIT_REVISION");

/// The sysctls a report records (`/proc/sys/` paths with dots): socket buffer bounds, TCP's
/// congestion control, busy polling.
pub(crate) const SYSCTLS: [&str; 5] = [
    "net.core.rmem_max",
    "net.core.wmem_max",
    "net.ipv4.tcp_congestion_control",
    "net.core.busy_poll",
    "net.core.busy_read",
];

/// Where a report came from.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Meta {
    /// netcore's version (Cargo.toml).
    pub version: String,
    /// The git revision it was built from (`git describe --always --dirty`), "unknown" when
    /// built outside a checkout.
    pub git_revision: String,
    /// The host name.
    pub host: String,
    /// The kernel release (`uname -r`).
    pub kernel: String,
    /// The CPU model (`/proc/cpuinfo`'s first "model name"; empty where it has none).
    pub cpu_model: String,
    /// CPUs online.
    pub cpus: usize,
    /// The CPUs this process may run on (its affinity, e.g. from `taskset`), as a list
    /// (`0-1`).
    pub cpus_allowed: String,
    /// The threads pinned to a CPU (`--pin`, `--cpus`) by this process so far: thread name to
    /// CPU. Threads not pinned ran wherever the scheduler put them (within `cpus_allowed`).
    pub pinned_threads: BTreeMap<String, usize>,
    /// The sysctls of [`SYSCTLS`] (name to value; absent where unreadable).
    pub sysctls: BTreeMap<String, String>,
    /// When this process started (RFC 3339, UTC).
    pub started: String,
    /// When this report was made (RFC 3339, UTC).
    pub reported: String,
}

static STARTED: OnceLock<SystemTime> = OnceLock::new();

/// Notes the process's start (`main` calls it first); a report made before (a test in-process)
/// gives its own making time as the start.
pub fn mark_start() {
    STARTED.get_or_init(SystemTime::now);
}

impl Meta {
    /// This process's facts now: the one builder every report calls.
    pub(crate) fn gather() -> Meta {
        let now = SystemTime::now();
        Meta {
            version: env!("CARGO_PKG_VERSION").to_string(),
            git_revision: GIT_REVISION.to_string(),
            host: read_trim("/proc/sys/kernel/hostname"),
            kernel: read_trim("/proc/sys/kernel/osrelease"),
            cpu_model: cpu_model(&read("/proc/cpuinfo")),
            cpus: crate::sys::online_cpus(),
            cpus_allowed: cpus_allowed(&read("/proc/self/status")),
            pinned_threads: crate::sys::affinity::pinned_threads(),
            sysctls: SYSCTLS
                .iter()
                .filter_map(|n| {
                    let v = std::fs::read_to_string(sysctl_path(n)).ok()?;
                    Some((n.to_string(), v.trim().to_string()))
                })
                .collect(),
            started: rfc3339(*STARTED.get().unwrap_or(&now)),
            reported: rfc3339(now),
        }
    }

    /// The text report's first line: version, revision, kernel, host, CPUs and when.
    pub(crate) fn headline(&self) -> String {
        format!(
            "netcore {} ({}), Linux {} on {}, {} CPUs ({}), {}",
            self.version,
            self.git_revision,
            self.kernel,
            self.host,
            self.cpus,
            if self.cpu_model.is_empty() {
                "unknown model"
            } else {
                &self.cpu_model
            },
            self.reported
        )
    }
}

fn read(path: &str) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

fn read_trim(path: &str) -> String {
    read(path).trim().to_string()
}

/// `net.core.rmem_max` -> `/proc/sys/net/core/rmem_max`.
pub(crate) fn sysctl_path(name: &str) -> String {
    format!("/proc/sys/{}", name.replace('.', "/"))
}

/// The first "model name" of a `/proc/cpuinfo` text (empty where there is none, as on some ARM
/// kernels).
pub(crate) fn cpu_model(cpuinfo: &str) -> String {
    cpuinfo
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            (k.trim() == "model name").then(|| v.trim().to_string())
        })
        .unwrap_or_default()
}

/// `Cpus_allowed_list` of a `/proc/self/status` text.
pub(crate) fn cpus_allowed(status: &str) -> String {
    status
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
        .map(|v| v.trim().to_string())
        .unwrap_or_default()
}

/// `t` as RFC 3339 in UTC to the millisecond (`2026-12-06T12:33:27.123Z`).
pub(crate) fn rfc3339(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    let (y, m, day) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60,
        d.subsec_millis()
    )
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian (H. Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn dates() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        let t = UNIX_EPOCH + Duration::from_millis(1_796_560_407_123);
        assert_eq!(rfc3339(t), "2026-12-06T12:33:27.123Z");
        // A leap day and the turn of a century.
        assert_eq!(
            rfc3339(UNIX_EPOCH + Duration::from_secs(951_782_400)),
            "2000-02-29T00:00:00.000Z"
        );
        assert_eq!(
            rfc3339(UNIX_EPOCH + Duration::from_secs(4_107_542_399)),
            "2100-02-28T23:59:59.000Z"
        );
    }

    #[test]
    fn host_texts() {
        let info = "processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC 7B13\n";
        assert_eq!(cpu_model(info), "AMD EPYC 7B13");
        assert_eq!(cpu_model("processor : 0\n"), "");
        assert_eq!(cpus_allowed("Name:\tx\nCpus_allowed_list:\t0-1\n"), "0-1");
        assert_eq!(
            sysctl_path("net.core.rmem_max"),
            "/proc/sys/net/core/rmem_max"
        );
    }

    #[test]
    fn gathered_here() {
        let m = Meta::gather();
        assert_eq!(m.version, env!("CARGO_PKG_VERSION"));
        assert!(!m.git_revision.is_empty());
        assert!(!m.kernel.is_empty() && m.cpus >= 1 && !m.cpus_allowed.is_empty());
        assert!(
            m.sysctls.contains_key("net.core.rmem_max"),
            "{:?}",
            m.sysctls
        );
        assert!(m.reported.ends_with('Z') && m.started <= m.reported);
        let h = m.headline();
        assert!(
            h.starts_with(&format!("netcore {} (", m.version)) && h.contains(&m.kernel),
            "{h}"
        );
    }
}
