//! Compatibility levels and the decision whether a candidate schema may follow earlier versions,
//! shared by the dev schema registry and the `tillctl schemas check` gate so both decide alike.
//! Pure functions over parsed Avro schemas; no I/O.
//!
//! Guarantee (Confluent's meaning): BACKWARD = the candidate can read data written with the
//! previous schema(s); FORWARD = the previous schema(s) can read data written with the candidate;
//! FULL = both. Non-transitive levels check only the latest version, `*_TRANSITIVE` ones check every
//! given version. The reader/writer check itself is apache-avro's `SchemaCompatibility::can_read`,
//! where a *partial* match (some union branch or enum symbol the writer can produce is unreadable)
//! counts as incompatible, as in Java Avro's `SchemaCompatibility` that Confluent uses.

use std::fmt;
use std::str::FromStr;

use apache_avro::Schema;
use apache_avro::schema_compatibility::{Compatibility, SchemaCompatibility};
use serde::{Deserialize, Serialize};

/// A compatibility level name that is not one of Confluent's seven.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid compatibility level {0:?}")]
pub struct UnknownLevel(pub String);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Default)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Level {
    None,
    #[default]
    Backward,
    BackwardTransitive,
    Forward,
    ForwardTransitive,
    Full,
    FullTransitive,
}

impl Level {
    pub const ALL: [Level; 7] = [
        Level::None,
        Level::Backward,
        Level::BackwardTransitive,
        Level::Forward,
        Level::ForwardTransitive,
        Level::Full,
        Level::FullTransitive,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Level::None => "NONE",
            Level::Backward => "BACKWARD",
            Level::BackwardTransitive => "BACKWARD_TRANSITIVE",
            Level::Forward => "FORWARD",
            Level::ForwardTransitive => "FORWARD_TRANSITIVE",
            Level::Full => "FULL",
            Level::FullTransitive => "FULL_TRANSITIVE",
        }
    }

    pub fn is_transitive(self) -> bool {
        matches!(
            self,
            Level::BackwardTransitive | Level::ForwardTransitive | Level::FullTransitive
        )
    }

    /// The candidate must be able to read the previous schemas' data.
    fn checks_backward(self) -> bool {
        matches!(
            self,
            Level::Backward | Level::BackwardTransitive | Level::Full | Level::FullTransitive
        )
    }

    /// The previous schemas must be able to read the candidate's data.
    fn checks_forward(self) -> bool {
        matches!(
            self,
            Level::Forward | Level::ForwardTransitive | Level::Full | Level::FullTransitive
        )
    }
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Accepts any case (`full`, `FULL`), like the REST API.
impl<'de> Deserialize<'de> for Level {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl FromStr for Level {
    type Err = UnknownLevel;

    /// Case-insensitive, as Confluent accepts `backward` as well as `BACKWARD`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Level::ALL
            .into_iter()
            .find(|l| l.as_str().eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| UnknownLevel(s.to_string()))
    }
}

/// A previous version to check against: its version number and parsed schema.
#[derive(Debug, Clone)]
pub struct Previous<'a> {
    pub version: u32,
    pub schema: &'a Schema,
}

/// Checks `candidate` against `previous` (oldest first) under `level`. Returns one message per
/// failed check; empty means compatible. Non-transitive levels look only at the last element.
pub fn check(level: Level, candidate: &Schema, previous: &[Previous<'_>]) -> Vec<String> {
    let against: &[Previous<'_>] = if level.is_transitive() {
        previous
    } else {
        match previous.split_last() {
            Some((last, _)) => std::slice::from_ref(last),
            None => &[],
        }
    };
    let mut messages = Vec::new();
    for prev in against {
        if level.checks_backward()
            && let Err(e) = can_read(prev.schema, candidate)
        {
            messages.push(format!(
                "BACKWARD: the new schema cannot read data written with version {}: {e}",
                prev.version
            ));
        }
        if level.checks_forward()
            && let Err(e) = can_read(candidate, prev.schema)
        {
            messages.push(format!(
                "FORWARD: version {} cannot read data written with the new schema: {e}",
                prev.version
            ));
        }
    }
    messages
}

/// Can every datum written with `writer` be read with `reader`? A partial match is a no.
fn can_read(writer: &Schema, reader: &Schema) -> Result<(), String> {
    match SchemaCompatibility::can_read(writer, reader) {
        Ok(Compatibility::Full) => Ok(()),
        Ok(Compatibility::Partial) => Err("only partially compatible: the writer can produce \
             values (a union branch or an enum symbol) the reader cannot read"
            .to_string()),
        Err(e) => Err(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(text: &str) -> Schema {
        Schema::parse_str(text).unwrap()
    }

    fn rec(fields: &str) -> Schema {
        p(&format!(
            r#"{{"type":"record","name":"Sale","namespace":"t","fields":[{fields}]}}"#
        ))
    }

    fn ok(level: Level, candidate: &Schema, prev: &[&Schema]) -> bool {
        let prev: Vec<Previous<'_>> = prev
            .iter()
            .enumerate()
            .map(|(i, s)| Previous {
                version: i as u32 + 1,
                schema: s,
            })
            .collect();
        check(level, candidate, &prev).is_empty()
    }

    const A: &str = r#"{"name":"a","type":"string"}"#;
    const B_DEF: &str = r#"{"name":"b","type":"int","default":0}"#;
    const B: &str = r#"{"name":"b","type":"int"}"#;

    #[test]
    fn levels_parse_case_insensitively() {
        for l in Level::ALL {
            assert_eq!(l.as_str().parse::<Level>().unwrap(), l);
            assert_eq!(l.as_str().to_lowercase().parse::<Level>().unwrap(), l);
        }
        assert!("SIDEWAYS".parse::<Level>().is_err());
        let l: Level = serde_json::from_str("\"full_transitive\"").unwrap();
        assert_eq!(l, Level::FullTransitive);
        assert_eq!(serde_json::to_string(&l).unwrap(), "\"FULL_TRANSITIVE\"");
        assert!(serde_json::from_str::<Level>("\"sideways\"").is_err());
        assert_eq!(Level::default(), Level::Backward);
    }

    #[test]
    fn none_accepts_anything() {
        let v1 = rec(A);
        let v2 = rec(r#"{"name":"a","type":"int"}"#);
        assert!(ok(Level::None, &v2, &[&v1]));
        assert!(ok(Level::None, &p(r#""string""#), &[&v1]));
    }

    #[test]
    fn backward() {
        let v1 = rec(A);
        assert!(ok(Level::Backward, &rec(&format!("{A},{B_DEF}")), &[&v1]));
        assert!(!ok(Level::Backward, &rec(&format!("{A},{B}")), &[&v1]));
        // Removing a field is backward compatible (the new reader ignores it).
        assert!(ok(
            Level::Backward,
            &rec(B_DEF),
            &[&rec(&format!("{A},{B_DEF}"))]
        ));
    }

    #[test]
    fn forward() {
        let v1 = rec(A);
        // Adding a field without default is forward compatible (old readers ignore it).
        assert!(ok(Level::Forward, &rec(&format!("{A},{B}")), &[&v1]));
        // Removing a field the old schema needs (no default there) is not.
        let v1b = rec(&format!("{A},{B}"));
        assert!(!ok(Level::Forward, &rec(A), &[&v1b]));
    }

    #[test]
    fn full() {
        let v1 = rec(A);
        assert!(ok(Level::Full, &rec(&format!("{A},{B_DEF}")), &[&v1]));
        assert!(!ok(Level::Full, &rec(&format!("{A},{B}")), &[&v1]));
        let changed = rec(r#"{"name":"a","type":"int"}"#);
        assert!(!ok(Level::Full, &changed, &[&v1]));
    }

    #[test]
    fn backward_transitive() {
        let v1 = rec(A);
        let v2 = rec(&format!("{A},{B_DEF}"));
        let v3 = rec(&format!("{A},{B}")); // reads v2 (b present) but not v1 (b missing, no default)
        assert!(ok(Level::Backward, &v3, &[&v1, &v2]));
        assert!(!ok(Level::BackwardTransitive, &v3, &[&v1, &v2]));
        assert!(ok(Level::BackwardTransitive, &v2, &[&v1]));
    }

    #[test]
    fn forward_transitive() {
        let v1 = rec(&format!("{A},{B}"));
        let v2 = rec(&format!("{A},{B_DEF}"));
        let v3 = rec(A); // v2 can read it (default for b), v1 cannot
        assert!(ok(Level::Forward, &v3, &[&v1, &v2]));
        assert!(!ok(Level::ForwardTransitive, &v3, &[&v1, &v2]));
        assert!(ok(Level::ForwardTransitive, &v2, &[&v1]));
    }

    #[test]
    fn full_transitive() {
        let v1 = rec(A);
        let v2 = rec(&format!("{A},{B_DEF}"));
        let v3 = rec(&format!("{A},{B}")); // full with v2, not backward with v1
        assert!(ok(Level::Full, &v3, &[&v1, &v2]));
        assert!(!ok(Level::FullTransitive, &v3, &[&v1, &v2]));
        assert!(ok(Level::FullTransitive, &v2, &[&v1]));
    }

    #[test]
    fn partial_matches_are_incompatible() {
        let e3 = rec(r#"{"name":"k","type":{"type":"enum","name":"K","symbols":["A","B","C"]}}"#);
        let e2 = rec(r#"{"name":"k","type":{"type":"enum","name":"K","symbols":["A","B"]}}"#);
        // Dropping a symbol: the new reader cannot read old "C" data.
        assert!(!ok(Level::Backward, &e2, &[&e3]));
        // Adding a symbol: fine backward, not forward.
        assert!(ok(Level::Backward, &e3, &[&e2]));
        assert!(!ok(Level::Forward, &e3, &[&e2]));
        // Narrowing a union: old null values are unreadable.
        let opt = rec(r#"{"name":"a","type":["null","string"],"default":null}"#);
        assert!(!ok(Level::Backward, &rec(A), &[&opt]));
        // Widening to a union is fine.
        assert!(ok(Level::Backward, &opt, &[&rec(A)]));
    }

    #[test]
    fn no_previous_is_compatible() {
        for l in Level::ALL {
            assert!(ok(l, &rec(A), &[]));
        }
    }
}
