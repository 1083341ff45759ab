//! A measured flow between two netcore ends: what every protocol's test shares (the control
//! channel and its messages' payloads, the sequence tracker, the pacer, the backend choice,
//! facts about the host), one folder per data protocol above it (`udp/`, `tcp/`, and `iperf3/`
//! for iperf3 peers), and the receiver service (`recv/`) on top, which admits every kind of
//! test and dispatches it to its protocol.
//!
//! Layering: the shared modules here import no folder of `flow/`; a protocol folder imports
//! the shared modules and never a sibling protocol's folder (iperf3 stands on tcp's engine, the
//! one declared floor) nor `recv/`; `recv/` may import them all (`tools/check-layers.py`).

pub mod access;
pub mod backend;
pub mod control;
pub mod cpu;
pub mod host;
pub mod iperf3;
pub mod kernel;
pub mod pacer;
pub mod payload;
pub mod probe;
pub mod recv;
pub mod rxwait;
pub mod search;
pub mod streams;
pub mod tcp;
pub mod tcp_engine;
pub mod tracker;
pub mod udp;
