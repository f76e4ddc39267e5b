//! Schema text handling: which schema types are accepted, Avro parsing (with references), and the
//! identity key that decides whether two submitted schemas are "the same schema".
//!
//! Guarantee: two schemas get the same identity key only if their JSON documents are equal after
//! sorting object keys and dropping insignificant whitespace. Nothing Avro-specific is normalised
//! away (in particular defaults, docs and aliases are kept), so a changed default is always a
//! different schema. Pure functions, no I/O.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::RegistryError;

/// The schema types this registry accepts. Only Avro: anything else is rejected with 42201.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
pub enum SchemaType {
    #[default]
    #[serde(rename = "AVRO")]
    Avro,
}

impl SchemaType {
    pub fn as_str(self) -> &'static str {
        match self {
            SchemaType::Avro => "AVRO",
        }
    }

    /// Parses the optional `schemaType` of a request (absent means AVRO, as in Confluent).
    pub fn parse(value: Option<&str>) -> Result<SchemaType, RegistryError> {
        match value {
            None => Ok(SchemaType::Avro),
            Some(v) if v.eq_ignore_ascii_case("AVRO") => Ok(SchemaType::Avro),
            Some(other) => Err(RegistryError::InvalidSchema(format!(
                "Invalid schema type {other}: this registry supports only AVRO"
            ))),
        }
    }
}

/// A reference from one schema to a named type registered under another subject and version.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Reference {
    pub name: String,
    pub subject: String,
    pub version: u32,
}

/// A schema as submitted by a client, before validation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchemaInput {
    pub schema: String,
    pub schema_type: SchemaType,
    pub references: Vec<Reference>,
}

impl SchemaInput {
    /// An Avro schema without references.
    pub fn avro(schema: impl Into<String>) -> Self {
        SchemaInput {
            schema: schema.into(),
            schema_type: SchemaType::Avro,
            references: Vec::new(),
        }
    }
}

/// The identity key of a schema: its type, its JSON with sorted object keys, and its references.
/// Fails (42201) if the text is not JSON.
pub fn identity_key(
    schema_type: SchemaType,
    schema: &str,
    references: &[Reference],
) -> Result<String, RegistryError> {
    let value: Value = serde_json::from_str(schema)
        .map_err(|e| RegistryError::InvalidSchema(format!("Invalid schema: not JSON: {e}")))?;
    let mut key = String::with_capacity(schema.len() + 16);
    key.push_str(schema_type.as_str());
    key.push('\n');
    write_sorted(&value, &mut key);
    for r in references {
        let _ = write!(key, "\n{}\u{0}{}\u{0}{}", r.name, r.subject, r.version);
    }
    Ok(key)
}

/// Serialises `value` compactly with every object's keys in sorted order, regardless of how
/// serde_json's map type is configured in this build.
fn write_sorted(value: &Value, out: &mut String) {
    match value {
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            out.push('{');
            for (i, (k, v)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(k.clone()).to_string());
                out.push(':');
                write_sorted(v, out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, v) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_sorted(v, out);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

/// Parses an Avro schema whose named-type references are resolved from `referenced` (the texts of
/// every schema it references, transitively). Fails with 42201 and the parser's message.
pub fn parse_avro(
    schema: &str,
    referenced: &[String],
) -> Result<apache_avro::Schema, RegistryError> {
    if schema.trim().is_empty() {
        return Err(RegistryError::InvalidSchema(
            "Invalid schema: empty schema".to_string(),
        ));
    }
    let parsed = if referenced.is_empty() {
        apache_avro::Schema::parse_str(schema)
    } else {
        apache_avro::Schema::parse_str_with_list(schema, referenced).map(|(main, _)| main)
    };
    parsed.map_err(|e| RegistryError::InvalidSchema(format!("Invalid schema: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_ignores_whitespace_and_key_order() {
        let a = r#"{"type":"record","name":"A","fields":[{"name":"x","type":"int"}]}"#;
        let b = r#"{ "name" : "A", "fields": [ {"type":"int", "name":"x"} ], "type": "record" }"#;
        assert_eq!(
            identity_key(SchemaType::Avro, a, &[]).unwrap(),
            identity_key(SchemaType::Avro, b, &[]).unwrap()
        );
    }

    #[test]
    fn key_keeps_defaults_and_field_order() {
        let a = r#"{"type":"record","name":"A","fields":[{"name":"x","type":"int","default":1}]}"#;
        let b = r#"{"type":"record","name":"A","fields":[{"name":"x","type":"int","default":2}]}"#;
        assert_ne!(
            identity_key(SchemaType::Avro, a, &[]).unwrap(),
            identity_key(SchemaType::Avro, b, &[]).unwrap()
        );
        let c = r#"{"type":"record","name":"A","fields":[{"name":"x","type":"int"},{"name":"y","type":"int"}]}"#;
        let d = r#"{"type":"record","name":"A","fields":[{"name":"y","type":"int"},{"name":"x","type":"int"}]}"#;
        assert_ne!(
            identity_key(SchemaType::Avro, c, &[]).unwrap(),
            identity_key(SchemaType::Avro, d, &[]).unwrap()
        );
    }

    #[test]
    fn bad_input_is_an_error_not_a_panic() {
        for text in [
            "",
            "   ",
            "not json",
            "{",
            r#"{"type":"record"}"#,
            r#"{"type":"nope"}"#,
        ] {
            assert!(parse_avro(text, &[]).is_err(), "{text}");
        }
        assert!(SchemaType::parse(Some("PROTOBUF")).is_err());
        assert_eq!(SchemaType::parse(Some("avro")).unwrap(), SchemaType::Avro);
        assert_eq!(SchemaType::parse(None).unwrap(), SchemaType::Avro);
    }
}
