//! The `rpm` report (pure): per phase goodput each way, probe latency (HDR percentiles), probe
//! fates, the latency added over idle, RPM, and the verdict; rendered as a table, JSON (schema
//! [`SCHEMA`]) and CSV.

use serde::{Deserialize, Serialize};

use super::aggregate::{self, RoundTrips};
use super::tracker::PhaseProbes;
use crate::stats::hist::Hist;
use crate::stats::table::Table;
use crate::stats::Report;
use crate::units::fmt_bits_per_sec;

pub(crate) const SCHEMA: &str = "netcore.rpm.v1";

/// The phases `rpm` can run, in their default order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum PhaseKind {
    Idle,
    Download,
    Upload,
    Bidir,
}

impl PhaseKind {
    pub(crate) const ALL: [PhaseKind; 4] = [
        PhaseKind::Idle,
        PhaseKind::Download,
        PhaseKind::Upload,
        PhaseKind::Bidir,
    ];

    pub fn name(self) -> &'static str {
        match self {
            PhaseKind::Idle => "idle",
            PhaseKind::Download => "download",
            PhaseKind::Upload => "upload",
            PhaseKind::Bidir => "bidir",
        }
    }

    /// Parses one name of `--phases`.
    pub fn parse(s: &str) -> Option<PhaseKind> {
        PhaseKind::ALL.into_iter().find(|p| p.name() == s.trim())
    }
}

/// Latency percentiles in milliseconds (all 0 without samples: see `count`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Latency {
    pub count: u64,
    pub min_ms: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

impl Latency {
    /// The summary of a histogram of nanoseconds.
    pub fn of(h: &Hist) -> Latency {
        let s = h.summary(1e6);
        Latency {
            count: s.count,
            min_ms: s.min,
            p50_ms: s.p50,
            p90_ms: s.p90,
            p99_ms: s.p99,
            max_ms: s.max,
        }
    }

    /// The summary of samples already in ms (TCP connect times, loaded RTTs), through an HDR
    /// histogram of ns like the probes'.
    pub(crate) fn of_ms(samples: &[f64]) -> Latency {
        let mut h = Hist::new();
        for &v in samples {
            h.record((v.max(0.0) * 1e6) as u64);
        }
        Latency::of(&h)
    }
}

/// Every probe's fate.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Probes {
    pub sent: u64,
    /// First echo within the late bound.
    pub answered: u64,
    /// No echo.
    pub lost: u64,
    /// First echo after the late bound (its round trip is in the latency too).
    pub late: u64,
    /// Echoes beyond a probe's first.
    pub duplicates: u64,
}

impl Probes {
    pub fn of(p: &PhaseProbes) -> Probes {
        Probes {
            sent: p.sent,
            answered: p.answered,
            lost: p.lost,
            late: p.late,
            duplicates: p.duplicates,
        }
    }
}

/// One-way delays (the clocks of both ends are one: the same host).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct OneWay {
    /// Prober to receiver.
    pub up: Latency,
    /// Receiver to prober.
    pub down: Latency,
}

/// One phase.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Phase {
    /// idle, download, upload or bidir.
    pub name: String,
    /// Seconds since the run's start, and how long it ran.
    pub start_s: f64,
    pub duration_s: f64,
    /// Bytes the receiving end read over the phase, as bits per second (0 without load that
    /// way).
    pub goodput_up_bps: f64,
    pub goodput_down_bps: f64,
    /// UDP probe round trips (less the time the echo held each probe).
    pub latency: Latency,
    pub probes: Probes,
    /// One-way probe delays, when both ends share a clock.
    pub one_way: Option<OneWay>,
    /// TCP handshakes of fresh connections during the phase.
    pub tcp_connect: Latency,
    /// A request/response (8 bytes each way) on each of those fresh connections.
    pub tcp_request: Latency,
    /// Smoothed RTT (`TCP_INFO`) of the loaded connections, sampled over the phase.
    pub loaded_rtt: Latency,
    /// Probe p50 less the idle phase's (absent without an idle phase or samples).
    pub added_ms: Option<f64>,
    /// Round trips per minute of this phase (absent without samples).
    pub rpm: Option<f64>,
    /// Segments the load connections retransmitted.
    pub retransmits: u64,
}

/// The settings a run used.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Settings {
    pub phases: Vec<PhaseKind>,
    pub phase_time_s: f64,
    pub gap_s: f64,
    /// Load connections per direction.
    pub streams: u16,
    pub probe_rate: f64,
    pub probe_len: usize,
    /// Echoes later than this are late.
    pub late_after_ms: f64,
    /// TCP_CONGESTION of the load connections (the kernel's default when absent).
    pub congestion: Option<String>,
    /// Probe receive times from the kernel (SO_TIMESTAMPNS) at both ends.
    pub kernel_timestamps: bool,
}

/// Where the probes that did not come back were lost, from the echo's own count of those that
/// reached it (its `EchoReport`), over the whole run. Exact while the path duplicates nothing
/// (a copy counts where it arrives).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ProbePath {
    pub sent: u64,
    /// Probes that reached the echo (copies included).
    pub reached_echo: u64,
    /// Echoes it sent back (not those over its rate: `refused_by_echo`).
    pub echoed: u64,
    /// Echoes that came back (answered, late and duplicates).
    pub came_back: u64,
    pub lost_on_the_way_there: u64,
    pub lost_on_the_way_back: u64,
    /// Datagrams the echo did not answer (another host, another test, over its rate).
    pub refused_by_echo: u64,
    /// Handshake probes the echo accepted.
    pub connects: u64,
}

impl ProbePath {
    /// From the probes' fates and the echo's counts.
    pub fn of(
        phases: &[PhaseProbes],
        received: u64,
        echoed: u64,
        refused: u64,
        connects: u64,
    ) -> ProbePath {
        let sent = phases.iter().map(|p| p.sent).sum();
        let came_back = phases
            .iter()
            .map(|p| p.answered + p.late + p.duplicates)
            .sum();
        ProbePath {
            sent,
            reached_echo: received,
            echoed,
            came_back,
            lost_on_the_way_there: sent.saturating_sub(received),
            lost_on_the_way_back: echoed.saturating_sub(came_back),
            refused_by_echo: refused,
            connects,
        }
    }
}

/// The report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct RpmReport {
    pub schema: String,
    /// Where the report came from (`stats::meta`): set by the driver, default in [`build`].
    #[serde(default)]
    pub meta: crate::stats::meta::Meta,
    /// The receiver's control address.
    pub target: String,
    /// When the run started (its phases' `start_s` count from here): seconds since the Unix
    /// epoch, to line other tools' samples up with the phases.
    pub start_unix_s: f64,
    pub settings: Settings,
    pub phases: Vec<Phase>,
    /// Round trips per minute under working conditions: the aggregate over every loaded phase
    /// (the idle phase's when only idle ran; absent without samples).
    pub rpm: Option<f64>,
    /// Where lost probes were lost (absent when the echo sent no account).
    pub probe_path: Option<ProbePath>,
    /// What the phases say, one sentence per line.
    pub verdict: Vec<String>,
    /// Ctrl-C (or a failed phase) ended the run early: the phases listed are those that ran.
    pub interrupted: bool,
    /// Why a phase failed, when one did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// What a driver measured in one phase, for [`build`].
#[derive(Debug, Clone)]
pub struct Measured {
    pub kind: PhaseKind,
    pub start_s: f64,
    pub duration_s: f64,
    pub goodput_up_bps: f64,
    pub goodput_down_bps: f64,
    pub probes: PhaseProbes,
    pub same_clock: bool,
    pub round_trips: RoundTrips,
    pub retransmits: u64,
}

/// A phase's row from what was measured (`added_ms` and the verdict come from [`conclude`]).
pub fn phase(m: &Measured) -> Phase {
    Phase {
        name: m.kind.name().into(),
        start_s: m.start_s,
        duration_s: m.duration_s,
        goodput_up_bps: m.goodput_up_bps,
        goodput_down_bps: m.goodput_down_bps,
        latency: Latency::of(&m.probes.rtt),
        probes: Probes::of(&m.probes),
        one_way: (m.same_clock && !m.probes.up.is_empty()).then(|| OneWay {
            up: Latency::of(&m.probes.up),
            down: Latency::of(&m.probes.down),
        }),
        tcp_connect: Latency::of_ms(&m.round_trips.tcp_connect_ms),
        tcp_request: Latency::of_ms(&m.round_trips.tcp_request_ms),
        loaded_rtt: Latency::of_ms(&m.round_trips.loaded_ms),
        added_ms: None,
        rpm: aggregate::rpm(&m.round_trips).map(|r| r.rpm),
        retransmits: m.retransmits,
    }
}

/// The report from the phases that ran: added latency over idle, the run's RPM (pooled over
/// the loaded phases), the verdict.
pub fn build(
    target: String,
    settings: Settings,
    measured: &[Measured],
    interrupted: bool,
) -> RpmReport {
    let mut phases: Vec<Phase> = measured.iter().map(phase).collect();
    let idle = phases
        .iter()
        .find(|p| p.name == PhaseKind::Idle.name() && p.latency.count > 0)
        .map(|p| p.latency.p50_ms);
    for p in &mut phases {
        if p.latency.count > 0 {
            p.added_ms = idle.map(|i| p.latency.p50_ms - i);
        }
    }
    let mut pooled = RoundTrips::default();
    let loaded: Vec<&Measured> = measured
        .iter()
        .filter(|m| m.kind != PhaseKind::Idle)
        .collect();
    let pool: Vec<&Measured> = if loaded.is_empty() {
        measured.iter().collect()
    } else {
        loaded
    };
    for m in pool {
        pooled.extend(&m.round_trips);
    }
    let verdict = verdict(&phases);
    RpmReport {
        schema: SCHEMA.into(),
        meta: Default::default(),
        target,
        start_unix_s: 0.0,
        settings,
        rpm: aggregate::rpm(&pooled).map(|r| r.rpm),
        phases,
        probe_path: None,
        verdict,
        interrupted,
        error: None,
    }
}

/// Where the added latency sits, given one-way delays (up and down added over idle).
fn which_queue(p: &Phase, idle: &Phase) -> Option<&'static str> {
    let (ow, iw) = (p.one_way.as_ref()?, idle.one_way.as_ref()?);
    let up = ow.up.p50_ms - iw.up.p50_ms;
    let down = ow.down.p50_ms - iw.down.p50_ms;
    Some(if up >= 2.0 * down.max(0.0) {
        "the queue on the upstream path grows"
    } else if down >= 2.0 * up.max(0.0) {
        "the queue on the downstream path grows"
    } else {
        "queues grow both ways"
    })
}

/// One sentence per loaded phase: how much it adds over idle and which queue grew (from the
/// one-way delays when the clocks are one, else from the phase's direction).
pub fn verdict(phases: &[Phase]) -> Vec<String> {
    let Some(idle) = phases
        .iter()
        .find(|p| p.name == PhaseKind::Idle.name() && p.latency.count > 0)
    else {
        return vec!["no idle phase with probe answers: latency added under load unknown".into()];
    };
    let mut out = Vec::new();
    for p in phases.iter().filter(|p| p.name != idle.name) {
        let Some(added) = p.added_ms else {
            out.push(format!("{}: no probe came back", p.name));
            continue;
        };
        let lossy = if p.probes.sent > 0 && p.probes.lost * 100 >= p.probes.sent {
            format!(
                ", {:.1} % of probes lost",
                p.probes.lost as f64 * 100.0 / p.probes.sent as f64
            )
        } else {
            String::new()
        };
        if added < 1.0 {
            out.push(format!(
                "{} adds under 1 ms (p50 {} ms against {} ms idle): no queue grew{lossy}",
                p.name,
                two(p.latency.p50_ms),
                two(idle.latency.p50_ms)
            ));
            continue;
        }
        let queue = which_queue(p, idle).unwrap_or(match p.name.as_str() {
            "upload" => "the queue on the upstream path grows",
            "download" => "the queue on the downstream path grows",
            _ => "a queue on the path grows",
        });
        out.push(format!(
            "{} adds {added:.1} ms (p50 {:.2} ms against {:.2} ms idle): {queue}{lossy}",
            p.name, p.latency.p50_ms, idle.latency.p50_ms
        ));
    }
    out
}

/// Two decimals, without a "-0.00".
fn two(v: f64) -> String {
    let r = (v * 100.0).round() / 100.0;
    format!("{:.2}", if r == 0.0 { 0.0 } else { r })
}

impl RpmReport {
    /// Takes the echo's account: the report's `probe_path`, and a verdict line when probes
    /// were lost.
    pub(crate) fn with_path(mut self, path: ProbePath) -> RpmReport {
        let (there, back) = (path.lost_on_the_way_there, path.lost_on_the_way_back);
        if there + back > 0 {
            self.verdict.push(format!(
                "probes lost: {there} on the way to the receiver, {back} on the way back"
            ));
        }
        self.probe_path = Some(path);
        self
    }
}

fn opt_ms(v: Option<f64>) -> String {
    v.map_or(String::from("-"), two)
}

fn ms(v: f64, count: u64) -> String {
    if count == 0 {
        "-".into()
    } else {
        two(v)
    }
}

impl RpmReport {
    fn rows(&self, csv: bool) -> Table {
        let mut t = Table::new([
            "phase",
            "up",
            "down",
            "p50_ms",
            "p90_ms",
            "p99_ms",
            "max_ms",
            "added_ms",
            "sent",
            "answered",
            "lost",
            "late",
            "dup",
            "connect_ms",
            "request_ms",
            "loaded_rtt_ms",
            "retr",
            "rpm",
        ]);
        let rate = |bps: f64| {
            if csv {
                format!("{bps:.0}")
            } else if bps == 0.0 {
                "-".into()
            } else {
                fmt_bits_per_sec(bps)
            }
        };
        for p in &self.phases {
            let l = &p.latency;
            t.row([
                p.name.clone(),
                rate(p.goodput_up_bps),
                rate(p.goodput_down_bps),
                ms(l.p50_ms, l.count),
                ms(l.p90_ms, l.count),
                ms(l.p99_ms, l.count),
                ms(l.max_ms, l.count),
                opt_ms(p.added_ms),
                p.probes.sent.to_string(),
                p.probes.answered.to_string(),
                p.probes.lost.to_string(),
                p.probes.late.to_string(),
                p.probes.duplicates.to_string(),
                ms(p.tcp_connect.p50_ms, p.tcp_connect.count),
                ms(p.tcp_request.p50_ms, p.tcp_request.count),
                ms(p.loaded_rtt.p50_ms, p.loaded_rtt.count),
                p.retransmits.to_string(),
                p.rpm.map_or("-".into(), |r| format!("{r:.0}")),
            ]);
        }
        t
    }
}

impl Report for RpmReport {
    fn meta(&self) -> &crate::stats::meta::Meta {
        &self.meta
    }

    fn to_table(&self) -> String {
        let s = &self.settings;
        let mut out = format!(
            "rpm to {}: {} s phases, {} stream(s) per direction{}, {} probes/s of {} bytes{}\n",
            self.target,
            s.phase_time_s,
            s.streams,
            s.congestion
                .as_ref()
                .map_or(String::new(), |c| format!(" ({c})")),
            s.probe_rate,
            s.probe_len,
            if self.interrupted {
                " [interrupted]"
            } else {
                ""
            }
        );
        out.push_str(&self.rows(false).render());
        for p in &self.phases {
            if let Some(ow) = &p.one_way {
                out.push_str(&format!(
                    "{}: one-way p50 up {:.2} ms, down {:.2} ms\n",
                    p.name, ow.up.p50_ms, ow.down.p50_ms
                ));
            }
        }
        if let Some(p) = &self.probe_path {
            out.push_str(&format!(
                "probes: {} sent, {} reached the receiver, {} echoed, {} came back\n",
                p.sent, p.reached_echo, p.echoed, p.came_back
            ));
        }
        match self.rpm {
            Some(r) => out.push_str(&format!(
                "RPM {r:.0} (60 s over the round trip under load)\n"
            )),
            None => out.push_str("RPM: no samples\n"),
        }
        for v in &self.verdict {
            out.push_str(&format!("verdict: {v}\n"));
        }
        if let Some(e) = &self.error {
            out.push_str(&format!("error: {e}\n"));
        }
        out
    }

    fn to_csv(&self) -> String {
        self.rows(true).to_csv()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn measured(kind: PhaseKind, rtt_ms: u64, n: u64, up_ms: u64) -> Measured {
        let mut probes = PhaseProbes {
            sent: n + 1,
            answered: n,
            lost: 1,
            ..PhaseProbes::default()
        };
        for _ in 0..n {
            probes.rtt.record(rtt_ms * 1_000_000);
            probes.up.record(up_ms * 1_000_000);
            probes.down.record((rtt_ms - up_ms) * 1_000_000);
        }
        Measured {
            kind,
            start_s: 0.0,
            duration_s: 1.0,
            goodput_up_bps: if kind == PhaseKind::Upload { 9e7 } else { 0.0 },
            goodput_down_bps: 0.0,
            probes,
            same_clock: true,
            round_trips: RoundTrips {
                udp_ms: vec![rtt_ms as f64; n as usize],
                ..RoundTrips::default()
            },
            retransmits: 0,
        }
    }

    fn settings() -> Settings {
        Settings {
            phases: vec![PhaseKind::Idle, PhaseKind::Upload],
            phase_time_s: 1.0,
            gap_s: 0.5,
            streams: 4,
            probe_rate: 100.0,
            probe_len: 64,
            late_after_ms: 2000.0,
            congestion: Some("cubic".into()),
            kernel_timestamps: true,
        }
    }

    #[test]
    fn added_latency_verdict_and_renderers() {
        let r = build(
            "127.0.0.1:5300".into(),
            settings(),
            &[
                measured(PhaseKind::Idle, 1, 50, 0),
                measured(PhaseKind::Upload, 100, 50, 95),
            ],
            false,
        );
        let up = &r.phases[1];
        assert_eq!(up.probes.sent, 51);
        assert!(
            (up.added_ms.unwrap() - 99.0).abs() < 0.2,
            "{:?}",
            up.added_ms
        );
        assert!(
            r.verdict[0].starts_with("upload adds 99"),
            "{:?}",
            r.verdict
        );
        assert!(r.verdict[0].contains("upstream"), "{:?}", r.verdict);
        // Pooled over the loaded phase only: 60000 / 100 ms.
        assert!((r.rpm.unwrap() - 600.0).abs() < 1e-6);
        let table = r.to_table();
        assert!(
            table.contains("upload") && table.contains("RPM 600"),
            "{table}"
        );
        let csv = r.to_csv();
        assert_eq!(csv.lines().count(), 3, "{csv}");
        assert!(csv
            .lines()
            .nth(2)
            .unwrap()
            .starts_with("upload,90000000,0,"));
        let v: serde_json::Value = serde_json::to_value(&r).unwrap();
        assert_eq!(v["schema"], SCHEMA);
        assert_eq!(v["phases"][1]["probes"]["lost"], 1);
        assert!(v["phases"][1]["latency"]["p50_ms"].as_f64().unwrap() > 99.0);
    }

    #[test]
    fn the_echo_account_splits_the_loss() {
        let m = measured(PhaseKind::Upload, 10, 50, 5);
        // 51 sent, 50 back: the echo saw 50 and echoed 50: lost on the way there.
        let path = ProbePath::of(std::slice::from_ref(&m.probes), 50, 50, 0, 3);
        assert_eq!(
            (path.lost_on_the_way_there, path.lost_on_the_way_back),
            (1, 0)
        );
        let r = build("x".into(), settings(), std::slice::from_ref(&m), false).with_path(path);
        assert!(r
            .verdict
            .last()
            .unwrap()
            .contains("1 on the way to the receiver, 0 on the way back"));
        // It saw all 51 and echoed them: lost on the way back.
        let path = ProbePath::of(&[m.probes], 51, 51, 0, 0);
        assert_eq!(
            (path.lost_on_the_way_there, path.lost_on_the_way_back),
            (0, 1)
        );
    }

    #[test]
    fn no_idle_no_added_latency() {
        let r = build(
            "x".into(),
            settings(),
            &[measured(PhaseKind::Download, 5, 3, 1)],
            true,
        );
        assert_eq!(r.phases[0].added_ms, None);
        assert!(r.verdict[0].contains("unknown"));
        assert!(r.to_table().contains("[interrupted]"));
        assert_eq!(PhaseKind::parse(" bidir"), Some(PhaseKind::Bidir));
        assert_eq!(PhaseKind::parse("x"), None);
    }
}
