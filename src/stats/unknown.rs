//! Figures that can be unknown: kept as 0 in memory (the text prints `n/a`), written as JSON
//! `null`, read back from `null` or a number (an older peer's 0). Used with
//! `#[serde(with = "crate::stats::unknown::zero")]` and `#[schemars(with = "Option<f64>")]`
//! on a field whose 0 can only mean "not measured" (a receiver's time with one batch, and the
//! rates over it). A figure that can be 0 when measured is an `Option<f64>` instead (a
//! stream's goodput: a stream that received nothing while others did has 0): null in JSON,
//! and [`text`] and [`csv`] write both kinds alike.

/// A figure for the text report: `fmt`'s, or `n/a` where it is unknown.
pub(crate) fn text(v: Option<f64>, fmt: impl Fn(f64) -> String) -> String {
    v.map_or_else(|| "n/a".into(), fmt)
}

/// A figure for a CSV cell (no decimals: bits or datagrams a second), empty where unknown.
pub(crate) fn csv(v: Option<f64>) -> String {
    v.map(|x| format!("{x:.0}")).unwrap_or_default()
}

/// A figure kept as [`zero`] keeps it (0: not measured), as an `Option`.
pub(crate) fn known(v: f64) -> Option<f64> {
    (v != 0.0).then_some(v)
}

/// `0.0` is written as `null`; `null` is read as `0.0`.
pub mod zero {
    use serde::{Deserialize, Deserializer, Serializer};

    pub(crate) fn serialize<S: Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
        if *v == 0.0 {
            s.serialize_none()
        } else {
            s.serialize_some(v)
        }
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        Ok(Option::<f64>::deserialize(d)?.unwrap_or(0.0))
    }
}

#[cfg(test)]
mod tests {
    #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    struct T {
        #[serde(with = "super::zero")]
        x: f64,
    }

    #[test]
    fn unknown_is_n_a_in_text_and_empty_in_csv() {
        let f = |x: f64| format!("{x} b");
        assert_eq!(super::text(None, f), "n/a");
        assert_eq!(super::text(Some(0.0), f), "0 b");
        assert_eq!(super::csv(None), "");
        assert_eq!(super::csv(Some(1234.4)), "1234");
        assert_eq!(super::known(0.0), None);
        assert_eq!(super::known(2.0), Some(2.0));
    }

    #[test]
    fn zero_is_null_and_back() {
        assert_eq!(
            serde_json::to_string(&T { x: 0.0 }).unwrap(),
            r#"{"x":null}"#
        );
        assert_eq!(
            serde_json::to_string(&T { x: 1.5 }).unwrap(),
            r#"{"x":1.5}"#
        );
        for (text, x) in [
            (r#"{"x":null}"#, 0.0),
            (r#"{"x":0}"#, 0.0),
            (r#"{"x":2.0}"#, 2.0),
        ] {
            assert_eq!(serde_json::from_str::<T>(text).unwrap(), T { x }, "{text}");
        }
    }
}
