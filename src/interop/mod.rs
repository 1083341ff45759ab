//! Other tools' wire protocols, as sans-IO cores (states and codecs; no sockets, no clock), so
//! that netcore's drivers can serve those tools' clients and drive their servers.

pub mod iperf3;
