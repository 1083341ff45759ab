//! The integration tests: one binary (as ripgrep does), so CI links once. Each module runs the
//! real `netcore` binary over real sockets on loopback (or in network namespaces it creates).

mod abuse;
mod cli;
mod common;
mod diff;
mod find_rate;
mod first_steps;
mod fuzz;
mod http;
mod iperf3;
mod load;
mod loss;
mod metrics;
mod progress;
mod relay;
mod rpm;
mod schemas;
mod serve;
mod service;
mod service_abuse;
mod signals;
mod sockperf;
mod streams;
mod tcp;
mod tcp_stop;
mod tcp_window;
mod traffic;
mod udp;
mod udp_stop;
