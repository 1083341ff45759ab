//! `--json-stream`: one JSON object per line per event (a test's start, its intervals, its
//! end with the report, an error), for log pipelines. Every line names its schema
//! ([`SCHEMA`]), the command and the event; the payloads are the command's own serde types
//! as `--json` prints them (a report's own `schema` field names its schema).

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The schema of every line.
pub(crate) const SCHEMA: &str = "netcore.events.v1";

/// One line of the stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct EventLine {
    /// Always "netcore.events.v1".
    pub schema: String,
    /// The command that printed it: blast, recv, load or serve.
    pub command: String,
    /// When it was printed: seconds since the Unix epoch.
    pub time: f64,
    /// "start", "interval", "end" or "error".
    pub event: EventKind,
    /// The test it belongs to, when the command runs tests that have ids (blast, recv).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test_id: Option<String>,
    /// What runs: udp, tcp, iperf3 (blast, recv), the load's workload, the server's
    /// model and protocol.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// The other end's address, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer: Option<String>,
    /// The event's figures: an interval row (interval), the report as `--json` prints it
    /// (end), the settings (start); absent for an error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<Value>,
    /// What went wrong (error).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// The kinds of event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub(crate) enum EventKind {
    Start,
    Interval,
    End,
    Error,
}

impl EventLine {
    /// A line of `command` for `event`, stamped now.
    pub fn new(command: &str, event: EventKind) -> EventLine {
        let time = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        EventLine {
            schema: SCHEMA.into(),
            command: command.into(),
            time,
            event,
            test_id: None,
            kind: None,
            peer: None,
            data: None,
            message: None,
        }
    }

    pub fn test_id(mut self, id: impl Into<String>) -> Self {
        self.test_id = Some(id.into());
        self
    }

    pub fn kind(mut self, kind: impl Into<String>) -> Self {
        self.kind = Some(kind.into());
        self
    }

    pub fn peer(mut self, peer: impl ToString) -> Self {
        self.peer = Some(peer.to_string());
        self
    }

    /// The figures: any serde value (a row, a report, settings).
    pub fn data(mut self, v: &impl Serialize) -> Self {
        self.data = serde_json::to_value(v).ok();
        self
    }

    pub fn message(mut self, m: impl Into<String>) -> Self {
        self.message = Some(m.into());
        self
    }

    /// The line, newline included.
    pub(crate) fn to_line(&self) -> String {
        // Serializing plain data into a String cannot fail.
        let mut s = serde_json::to_string(self).unwrap_or_default();
        s.push('\n');
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_is_one_json_object_that_reads_back() {
        let l = EventLine::new("recv", EventKind::Interval)
            .test_id("00ab")
            .kind("udp")
            .peer("127.0.0.1:4000")
            .data(&serde_json::json!({"received": 5}));
        let text = l.to_line();
        assert_eq!(text.matches('\n').count(), 1);
        assert!(text.ends_with('\n'));
        assert!(
            text.starts_with("{\"schema\":\"netcore.events.v1\",\"command\":\"recv\""),
            "{text}"
        );
        assert!(text.contains("\"event\":\"interval\""), "{text}");
        let back: EventLine = serde_json::from_str(&text).unwrap();
        assert_eq!(back, l);
        let e = EventLine::new("serve", EventKind::Error).message("bad\nthing");
        assert_eq!(e.to_line().matches('\n').count(), 1, "newlines are escaped");
        assert!(!e.to_line().contains("test_id"));
    }
}
