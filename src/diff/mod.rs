//! `netcore diff`: two reports (or two sets of runs) of the same kind side by side, each
//! figure's change with its interval and a verdict (pure: JSON in, rows and text out; the
//! command's glue is `cli/diff.rs`).

pub mod compare;
pub mod figures;

pub use compare::{common_kind, diff, render, Input, Row, Verdict};
