//! `netcore rpm`: latency under load. Phases (idle, download, upload, bidir) of TCP load from
//! `flow::tcp`, with UDP probes echoed by the receiver throughout, TCP handshakes of fresh
//! connections and the loaded connections' RTT; the report says how much each phase adds over
//! idle, which queue grew, and the round trips per minute (RPM) of the IETF draft
//! "Responsiveness under Working Conditions".
//!
//! Pure: `tracker` (every probe's fate), `aggregate` (RPM), `report` (phases, verdict,
//! renderers), `timeline` (the points of the plot).

pub mod aggregate;
pub mod prober;
pub mod report;
pub mod run;
pub mod tracker;
