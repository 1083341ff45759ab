//! A measured flow between two netcore ends: what every protocol's test shares (the control
//! channel and its messages, the pacer, the backend choice, facts about the host), with one
//! driver folder per data protocol below it (`udp/`; TCP goes beside it as `tcp/`).
//!
//! Layering: the shared modules here never import a protocol folder's drivers (`sender`,
//! `receiver`); a protocol's drivers take the shared pieces from here.

pub mod access;
pub mod backend;
pub mod control;
pub mod cpu;
pub mod host;
pub mod iperf3;
pub mod kernel;
pub mod pacer;
pub mod payload;
pub mod recv;
pub mod rxwait;
pub mod search;
pub mod streams;
pub mod tcp;
pub mod tracker;
pub mod udp;
