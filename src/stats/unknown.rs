//! Figures that can be unknown: kept as 0 in memory (the text prints `n/a`), written as JSON
//! `null`, read back from `null` or a number (an older peer's 0). Used with
//! `#[serde(with = "crate::stats::unknown::zero")]` and `#[schemars(with = "Option<f64>")]`
//! on a field whose 0 can only mean "not measured" (a receiver's time with one batch, and the
//! rates over it).

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
