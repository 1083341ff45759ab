//! Measurement: latency histograms, the report trait and its renderers (table, JSON, CSV), and
//! plots.

pub mod events;
pub mod hist;
pub mod meta;
pub mod plot;
pub mod table;
pub mod timeline;
pub mod unknown;

use serde::Serialize;

/// Output format chosen on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Table,
    Json,
    Csv,
}

impl Format {
    pub(crate) fn from_flags(json: bool, csv: bool) -> Format {
        if json {
            Format::Json
        } else if csv {
            Format::Csv
        } else {
            Format::Table
        }
    }
}

/// A run's final report: a plain serde struct that also renders as a human table and as CSV.
/// JSON is the struct itself, with a `schema` field naming its version.
pub trait Report: Serialize {
    /// Human-readable multi-line table.
    fn to_table(&self) -> String;
    /// CSV: a header line and one or more rows.
    fn to_csv(&self) -> String;
    /// Where the report came from (its JSON's `meta`; the table's first line).
    fn meta(&self) -> &meta::Meta;

    fn render(&self, format: Format) -> String {
        match format {
            Format::Table => format!("{}\n{}", self.meta().headline(), self.to_table()),
            Format::Csv => self.to_csv(),
            Format::Json => {
                let mut s = serde_json::to_string_pretty(self).expect("reports serialise");
                s.push('\n');
                s
            }
        }
    }
}
