//! What the kernel counted over a test, and what it says about where loss and time went.
//!
//! - [`Snapshot`]: the host's UDP counters (`/proc/net/snmp`: `RcvbufErrors`, `SndbufErrors`,
//!   `InErrors`), its per-CPU backlog drops (`/proc/net/softnet_stat`), each core's time by
//!   kind (`/proc/stat`) and its network receive softirqs (`/proc/softirqs`, `NET_RX`), read
//!   before and after a test; [`Snapshot::delta`] gives the change.
//! - [`split_loss`]: splits a test's `lost` into dropped at the receiving socket's buffer (the
//!   socket's own `SO_RXQ_OVFL` count when the driver has it), dropped in this host's backlog,
//!   and not seen by this host (the path or the sender's side), saying when the split cannot be
//!   exact (other traffic on the host moves the host-wide counters too).
//! - [`verdict`]: one line naming the bottleneck from the busy threads' and the cores' shares.
//!
//! Parsing is pure (text in, numbers out); only [`Snapshot::read`] touches `/proc`.

use serde::{Deserialize, Serialize};

/// The host's UDP counters (`/proc/net/snmp`, line `Udp:`).
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema,
)]
pub struct UdpCounters {
    pub in_datagrams: u64,
    pub in_errors: u64,
    pub rcvbuf_errors: u64,
    pub sndbuf_errors: u64,
}

/// One CPU's time by kind, in clock ticks (`/proc/stat`, line `cpuN`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct CpuTicks {
    pub cpu: usize,
    pub user: u64,
    pub system: u64,
    pub idle: u64,
    pub softirq: u64,
    /// Everything else that is not idle (nice, irq, steal, iowait counts as idle).
    pub other: u64,
}

impl CpuTicks {
    fn total(&self) -> u64 {
        self.user + self.system + self.idle + self.softirq + self.other
    }
}

/// The kernel's counters at one moment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Snapshot {
    pub udp: Option<UdpCounters>,
    /// Backlog drops per CPU (`/proc/net/softnet_stat`, second column).
    pub backlog_drops: Vec<u64>,
    pub cpus: Vec<CpuTicks>,
    /// `NET_RX` softirqs run per CPU (`/proc/softirqs`), in CPU order.
    pub net_rx: Vec<u64>,
}

/// A core's share of a test's wall time.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct CoreShare {
    pub cpu: usize,
    /// Percent of the interval the core was not idle.
    pub busy_pct: f64,
    /// Percent of the interval spent in softirq (the network receive path runs there).
    pub softirq_pct: f64,
    /// `NET_RX` softirqs the core ran over the interval (`/proc/softirqs`).
    #[serde(default)]
    pub net_rx: u64,
}

/// The change over a test.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Delta {
    /// `None` where `/proc/net/snmp` could not be read.
    pub udp: Option<UdpCounters>,
    pub backlog_drops: u64,
    pub cores: Vec<CoreShare>,
}

impl UdpCounters {
    /// This host's counters now (None where `/proc/net/snmp` cannot be read).
    pub fn read() -> Option<UdpCounters> {
        parse_snmp_udp(&std::fs::read_to_string("/proc/net/snmp").ok()?)
    }
}

/// Parses the `Udp:` header and value lines of `/proc/net/snmp`.
pub(crate) fn parse_snmp_udp(text: &str) -> Option<UdpCounters> {
    let mut lines = text.lines().filter(|l| l.starts_with("Udp: "));
    let names: Vec<&str> = lines.next()?.split_whitespace().skip(1).collect();
    let values: Vec<u64> = lines
        .next()?
        .split_whitespace()
        .skip(1)
        .map(|v| v.parse().ok())
        .collect::<Option<_>>()?;
    let get = |n: &str| {
        names
            .iter()
            .position(|x| *x == n)
            .and_then(|i| values.get(i).copied())
    };
    Some(UdpCounters {
        in_datagrams: get("InDatagrams")?,
        in_errors: get("InErrors")?,
        rcvbuf_errors: get("RcvbufErrors")?,
        sndbuf_errors: get("SndbufErrors")?,
    })
}

/// Parses `/proc/net/softnet_stat`: one line per CPU, hexadecimal columns; the second is the
/// packets dropped because the CPU's backlog queue was full.
pub(crate) fn parse_softnet(text: &str) -> Vec<u64> {
    text.lines()
        .filter_map(|l| u64::from_str_radix(l.split_whitespace().nth(1)?, 16).ok())
        .collect()
}

/// Parses the `cpuN` lines of `/proc/stat`.
pub(crate) fn parse_stat(text: &str) -> Vec<CpuTicks> {
    text.lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let cpu = f.next()?.strip_prefix("cpu")?.parse::<usize>().ok()?;
            let v: Vec<u64> = f.map(|x| x.parse().unwrap_or(0)).collect();
            let at = |i: usize| v.get(i).copied().unwrap_or(0);
            // user nice system idle iowait irq softirq steal guest guest_nice
            Some(CpuTicks {
                cpu,
                user: at(0),
                system: at(2),
                idle: at(3) + at(4),
                softirq: at(6),
                other: at(1) + at(5) + at(7),
            })
        })
        .collect()
}

/// Parses the `NET_RX:` line of `/proc/softirqs`: one count per CPU, in the header's order.
pub(crate) fn parse_softirqs_net_rx(text: &str) -> Vec<u64> {
    text.lines()
        .find_map(|l| l.trim_start().strip_prefix("NET_RX:"))
        .map(|v| v.split_whitespace().map_while(|x| x.parse().ok()).collect())
        .unwrap_or_default()
}

impl Snapshot {
    /// Reads the counters now; what cannot be read stays empty (the report then says so).
    pub fn read() -> Snapshot {
        let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
        Snapshot {
            udp: parse_snmp_udp(&read("/proc/net/snmp")),
            backlog_drops: parse_softnet(&read("/proc/net/softnet_stat")),
            cpus: parse_stat(&read("/proc/stat")),
            net_rx: parse_softirqs_net_rx(&read("/proc/softirqs")),
        }
    }

    /// What changed from `self` to `later`.
    pub(crate) fn delta(&self, later: &Snapshot) -> Delta {
        let udp = match (self.udp, later.udp) {
            (Some(a), Some(b)) => Some(UdpCounters {
                in_datagrams: b.in_datagrams.saturating_sub(a.in_datagrams),
                in_errors: b.in_errors.saturating_sub(a.in_errors),
                rcvbuf_errors: b.rcvbuf_errors.saturating_sub(a.rcvbuf_errors),
                sndbuf_errors: b.sndbuf_errors.saturating_sub(a.sndbuf_errors),
            }),
            _ => None,
        };
        let backlog_drops = later
            .backlog_drops
            .iter()
            .zip(&self.backlog_drops)
            .map(|(b, a)| b.saturating_sub(*a))
            .sum();
        let cores = later
            .cpus
            .iter()
            .filter_map(|b| {
                let a = self.cpus.iter().find(|a| a.cpu == b.cpu)?;
                let total = b.total().saturating_sub(a.total()).max(1) as f64;
                let idle = b.idle.saturating_sub(a.idle) as f64;
                let softirq = b.softirq.saturating_sub(a.softirq) as f64;
                let net_rx = |s: &Snapshot| s.net_rx.get(b.cpu).copied().unwrap_or(0);
                Some(CoreShare {
                    cpu: b.cpu,
                    busy_pct: 100.0 * (1.0 - idle / total).clamp(0.0, 1.0),
                    softirq_pct: 100.0 * (softirq / total).clamp(0.0, 1.0),
                    net_rx: net_rx(later).saturating_sub(net_rx(self)),
                })
            })
            .collect();
        Delta {
            udp,
            backlog_drops,
            cores,
        }
    }
}

/// Where a test's lost datagrams went.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct LossSplit {
    pub lost: u64,
    /// Dropped because the receiving socket's buffer was full.
    pub socket_buffer: u64,
    /// Dropped in this host's backlog queues before any socket saw them.
    pub backlog: u64,
    /// Never reached this host (the path, or the sender's side).
    pub not_seen: u64,
    /// True when each part is this test's own count; false when a host-wide counter (which
    /// other traffic moves too) had to stand in.
    pub exact: bool,
    /// Why the split is not exact, when it is not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// Splits `lost` using the socket's own drop count (`SO_RXQ_OVFL`, when the driver has it) and
/// the host's counters over the test. The kernel counts dropped buffers, not datagrams: with
/// GRO on the receiving socket a dropped buffer may hold up to `segs` datagrams (on loopback, a
/// whole GSO send), so with `segs` > 1 each count is scaled by `segs` (capped by `lost`) and
/// the split is an estimate.
pub(crate) fn split_loss(lost: u64, socket_drops: Option<u64>, segs: u64, d: &Delta) -> LossSplit {
    let segs = segs.max(1);
    let mut notes: Vec<String> = Vec::new();
    let socket_buffer = match (socket_drops, d.udp) {
        (Some(n), _) => n.saturating_mul(segs).min(lost),
        (None, Some(u)) => {
            notes.push("socket drops taken from the host's RcvbufErrors".into());
            u.rcvbuf_errors.saturating_mul(segs).min(lost)
        }
        (None, None) => {
            notes.push("no socket drop count on this host".into());
            0
        }
    };
    if let (Some(n), Some(u)) = (socket_drops, d.udp) {
        if u.rcvbuf_errors > n {
            notes.push("other sockets on this host dropped datagrams too".into());
        }
    }
    let backlog = d
        .backlog_drops
        .saturating_mul(segs)
        .min(lost - socket_buffer);
    if d.backlog_drops > 0 {
        notes.push("backlog drops are host-wide".into());
    }
    if segs > 1 && (socket_buffer > 0 || backlog > 0) {
        notes.push(format!(
            "the kernel counts dropped buffers, and with GRO a buffer holds up to {segs} datagrams: datagrams estimated"
        ));
    }
    LossSplit {
        lost,
        socket_buffer,
        backlog,
        not_seen: lost - socket_buffer - backlog,
        exact: notes.is_empty(),
        note: (!notes.is_empty()).then(|| notes.join("; ")),
    }
}

/// A busy thread's share of one core over the test.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ThreadLoad {
    /// `sender`, `receiver`, ...
    pub role: String,
    /// The CPU it was pinned to, if it was.
    pub cpu: Option<usize>,
    /// Percent of one core (user + system; with several threads of the role, their sum).
    pub pct: f64,
    /// Of which in user mode.
    #[serde(default)]
    pub user_pct: f64,
    /// Of which in the kernel (on loopback: the sender's also runs the receive path).
    #[serde(default)]
    pub system_pct: f64,
}

/// One line naming the bottleneck.
pub fn verdict(
    threads: &[ThreadLoad],
    cores: &[CoreShare],
    loopback: bool,
    split: &LossSplit,
) -> String {
    let on = |cpu: Option<usize>| cpu.map(|c| format!(" of CPU {c}")).unwrap_or_default();
    // Datagrams dropped at the receiving socket while the receiver was busy: whatever else was
    // saturated (on loopback the sender's core always is), the receiver did not keep up.
    if split.socket_buffer > 0 {
        if let Some(t) = threads
            .iter()
            .filter(|t| t.role == "receiver" && t.pct >= 90.0)
            .max_by(|a, b| a.pct.total_cmp(&b.pct))
        {
            return format!(
                "receiver thread at {:.0} %{} and {} datagrams dropped at its socket buffer: the receiver is the limit",
                t.pct,
                on(t.cpu),
                split.socket_buffer
            );
        }
    }
    if let Some(t) = threads
        .iter()
        .filter(|t| t.pct >= 90.0)
        .max_by(|a, b| a.pct.total_cmp(&b.pct))
    {
        return format!(
            "{} thread at {:.0} %{}: the {} is the limit",
            t.role,
            t.pct,
            on(t.cpu),
            t.role
        );
    }
    if let Some(c) = cores
        .iter()
        .filter(|c| c.busy_pct >= 90.0 && c.softirq_pct >= 30.0)
        .max_by(|a, b| a.softirq_pct.total_cmp(&b.softirq_pct))
    {
        let why = if loopback {
            "on loopback the sender's core runs the receive path"
        } else {
            "the kernel's receive path is the limit"
        };
        return format!(
            "CPU {} at {:.0} % with {:.0} % in softirq: {why}",
            c.cpu, c.busy_pct, c.softirq_pct
        );
    }
    if let Some(c) = cores
        .iter()
        .filter(|c| c.busy_pct >= 90.0)
        .max_by(|a, b| a.busy_pct.total_cmp(&b.busy_pct))
    {
        let ours: f64 = threads.iter().map(|t| t.pct).sum();
        return format!(
            "CPU {} at {:.0} % busy while the test's threads used {:.0} % of a core: other work on this host competed for the CPU",
            c.cpu, c.busy_pct, ours
        );
    }
    if split.socket_buffer > 0 {
        return "the receiving socket's buffer overflowed in bursts: the receiver fell behind (a larger --rcvbuf, or a faster receiver)".into();
    }
    if split.not_seen > 0 {
        return "datagrams were lost before this host: the path or the sender's side is the limit"
            .into();
    }
    "no thread or core was saturated: the test ran at its pace (or the peer set it)".into()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SNMP: &str = "Ip: Forwarding DefaultTTL\nIp: 1 64\n\
        Udp: InDatagrams NoPorts InErrors OutDatagrams RcvbufErrors SndbufErrors InCsumErrors IgnoredMulti MemErrors\n\
        Udp: 2518819 0 10120006 7871218 10120006 3 0 0 0\n\
        UdpLite: InDatagrams NoPorts InErrors OutDatagrams RcvbufErrors SndbufErrors InCsumErrors IgnoredMulti MemErrors\n\
        UdpLite: 0 0 0 0 0 0 0 0 0\n";

    #[test]
    fn parses_the_kernels_files() {
        let u = parse_snmp_udp(SNMP).unwrap();
        assert_eq!(
            u,
            UdpCounters {
                in_datagrams: 2518819,
                in_errors: 10120006,
                rcvbuf_errors: 10120006,
                sndbuf_errors: 3
            }
        );
        assert_eq!(parse_snmp_udp("Udp: A\nUdp: x\n"), None);
        let soft = "008628cb 00000010 00000004 00000000\n005d5fa6 0000000a 00000006 00000000\n";
        assert_eq!(parse_softnet(soft), vec![16, 10]);
        let softirqs = "                    CPU0       CPU1\n      NET_TX:          4          0\n      NET_RX:       2156       3054\n       BLOCK: 1 2\n";
        assert_eq!(parse_softirqs_net_rx(softirqs), vec![2156, 3054]);
        assert_eq!(parse_softirqs_net_rx("HI: 1 2\n"), Vec::<u64>::new());
        let stat = "cpu  5 0 5 5 0 0 0 0 0 0\ncpu0 100 1 20 300 4 0 50 0 0 0\ncpu1 1 0 1 1 0 0 0 0 0 0\nintr 1\n";
        let c = parse_stat(stat);
        assert_eq!(c.len(), 2);
        assert_eq!(
            (c[0].cpu, c[0].user, c[0].idle, c[0].softirq, c[0].other),
            (0, 100, 304, 50, 1)
        );
    }

    #[test]
    fn deltas_and_core_shares() {
        let a = Snapshot {
            udp: parse_snmp_udp(SNMP),
            backlog_drops: vec![5, 5],
            cpus: vec![CpuTicks {
                cpu: 0,
                idle: 100,
                ..CpuTicks::default()
            }],
            net_rx: vec![10],
        };
        let mut b = a.clone();
        b.backlog_drops = vec![7, 5];
        b.udp.as_mut().unwrap().rcvbuf_errors += 40;
        b.cpus[0].idle += 10;
        b.cpus[0].softirq += 60;
        b.cpus[0].user += 30;
        b.net_rx[0] += 5;
        let d = a.delta(&b);
        assert_eq!(d.cores[0].net_rx, 5);
        assert_eq!(d.backlog_drops, 2);
        assert_eq!(d.udp.unwrap().rcvbuf_errors, 40);
        assert!((d.cores[0].busy_pct - 90.0).abs() < 1e-9);
        assert!((d.cores[0].softirq_pct - 60.0).abs() < 1e-9);
    }

    #[test]
    fn loss_is_split_and_the_verdict_names_the_limit() {
        let d = Delta {
            udp: Some(UdpCounters {
                rcvbuf_errors: 30,
                ..UdpCounters::default()
            }),
            backlog_drops: 0,
            cores: vec![],
        };
        let s = split_loss(100, Some(30), 1, &d);
        assert_eq!(
            (s.socket_buffer, s.backlog, s.not_seen, s.exact),
            (30, 0, 70, true)
        );
        let s2 = split_loss(100, None, 1, &d);
        assert!(!s2.exact && s2.note.unwrap().contains("RcvbufErrors"));
        let s3 = split_loss(
            10,
            Some(5),
            1,
            &Delta {
                backlog_drops: 100,
                ..d.clone()
            },
        );
        assert_eq!((s3.socket_buffer, s3.backlog, s3.not_seen), (5, 5, 0));
        assert!(!s3.exact);
        // GRO: 4 dropped buffers of up to 44 datagrams, 170 lost.
        let s4 = split_loss(170, Some(4), 44, &Delta::default());
        assert_eq!((s4.socket_buffer, s4.not_seen), (170, 0));
        assert!(!s4.exact && s4.note.as_deref().unwrap().contains("44 datagrams"));
        let s5 = split_loss(170, Some(0), 44, &Delta::default());
        assert!(s5.exact && s5.not_seen == 170);

        let t = [ThreadLoad {
            role: "receiver".into(),
            cpu: Some(1),
            pct: 99.6,
            ..ThreadLoad::default()
        }];
        assert_eq!(
            verdict(&t, &[], true, &s5),
            "receiver thread at 100 % of CPU 1: the receiver is the limit"
        );
        // Both at 100 %, datagrams dropped at the receiver's buffer: the receiver, not the
        // (busier) sender, is the limit of what arrived.
        let both = [
            ThreadLoad {
                role: "sender".into(),
                cpu: Some(0),
                pct: 100.0,
                ..ThreadLoad::default()
            },
            t[0].clone(),
        ];
        assert_eq!(
            verdict(&both, &[], true, &s4),
            "receiver thread at 100 % of CPU 1 and 170 datagrams dropped at its socket buffer: the receiver is the limit"
        );
        assert_eq!(
            verdict(&both, &[], true, &s5),
            "sender thread at 100 % of CPU 0: the sender is the limit"
        );
        let cores = [CoreShare {
            cpu: 0,
            busy_pct: 98.0,
            softirq_pct: 60.0,
            net_rx: 0,
        }];
        assert_eq!(
            verdict(&[], &cores, true, &s),
            "CPU 0 at 98 % with 60 % in softirq: on loopback the sender's core runs the receive path"
        );
        assert!(verdict(&[], &[], false, &s).contains("socket's buffer"));
        let busy = [CoreShare {
            cpu: 1,
            busy_pct: 100.0,
            softirq_pct: 0.0,
            net_rx: 0,
        }];
        let light = [ThreadLoad {
            role: "receiver".into(),
            pct: 17.0,
            ..ThreadLoad::default()
        }];
        assert_eq!(
            verdict(&light, &busy, true, &s),
            "CPU 1 at 100 % busy while the test's threads used 17 % of a core: other work on this host competed for the CPU"
        );
    }

    #[test]
    fn reading_this_host_works() {
        let a = Snapshot::read();
        let b = Snapshot::read();
        let d = a.delta(&b);
        assert_eq!(d.cores.len(), a.cpus.len());
    }
}
