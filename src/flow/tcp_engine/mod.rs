//! netcore's TCP engine, run by netcore's TCP test (`flow::tcp`) and by iperf3's TCP tests
//! (`flow::iperf3`): the data connections' threads, their write and read loops, `TCP_INFO`
//! and the per-stream jobs and samples (`stream`), and a TCP test's report, its interval
//! rows and events (`report`, pure).

pub mod report;
pub mod stream;
