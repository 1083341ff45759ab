//! `blast --to iperf3://HOST[:PORT]`: a planned test against a stock `iperf3 -s` (port 5201
//! by default), UDP or TCP, `-P`, `-R`, `--bidir`; netcore's report, then the server's figures
//! as iperf3 returned them (on stderr when the report is JSON or CSV). TCP draws `--plot`
//! from its interval rows; UDP has none, and `--plot` is refused for it at plan time.

use std::net::SocketAddr;
use std::process::ExitCode;

use anyhow::Result;

use super::outcome::exit_of;
use super::plan::BlastPlan;
use crate::cli::common::out;
use crate::flow::iperf3::client::{self, ClientOptions, UdpClientOptions};
use crate::flow::payload::TcpSpec;
use crate::flow::tcp_engine::report::TcpReport;
use crate::flow::udp::sender::GsoMode;
use crate::stats::{Format, Report};

/// UDP: datagrams with iperf3's header to or from the server; netcore's report (what it sent
/// beside the server's figures, what it received through its tracker).
pub fn udp(plan: &BlastPlan, server: SocketAddr) -> Result<ExitCode> {
    let format = plan.out.format;
    let o = client::run_udp(&UdpClientOptions {
        server,
        streams: plan.streams,
        mode: plan.mode,
        len: plan.len,
        plan: plan.amount,
        rate_bps: plan.rate.map(|r| r.bits_per_sec(plan.len) as u64),
        gso: plan.udp.gso != GsoMode::Off,
        cpus: plan.cpus.send.clone(),
    })?;
    out(&o.report.render(format))?;
    let theirs = client::server_lines(&o.server, true);
    if format == Format::Table {
        out(&theirs)?;
    } else {
        eprint!("{theirs}");
    }
    Ok(exit_of(o.report.interrupted))
}

/// TCP: netcore's report, then the server's own figures.
pub fn tcp(plan: &BlastPlan, server: SocketAddr, spec: &TcpSpec) -> Result<ExitCode> {
    let live = plan.out.live();
    let o = client::run(
        &ClientOptions {
            server,
            spec: spec.clone(),
            plan: plan.amount,
            cpus: plan.cpus.send.clone(),
            interval: plan.interval,
        },
        &mut |row| live.line(&TcpReport::interval_lines(row)),
    )?;
    if let Some(p) = &plan.out.plot {
        super::tcp::plot_sum(p, &o.report)?;
    }
    out(&o.report.render(plan.out.format))?;
    let theirs = client::server_lines(&o.server, false);
    if live.on_stdout() {
        out(&theirs)?;
    } else {
        eprint!("{theirs}");
    }
    Ok(exit_of(o.report.interrupted))
}
