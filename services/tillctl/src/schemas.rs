//! The schema evolution gate: proves every version under `schemas/avro/<event>/v<N>.avsc` is
//! compatible with its predecessors under its subject's compatibility level, then (optionally)
//! registers them, in order, with a Confluent-compatible registry. No delivery guarantee: it is a
//! check; registration is idempotent (re-registering returns the existing id).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use apache_avro::Schema;
use serde::Deserialize;
use tillstream_contracts::compat::{self, Level, Previous};
use tillstream_contracts::{Registry, RegistryConfig, RegistryError};

#[derive(Debug, thiserror::Error)]
pub enum GateError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: not a valid Avro schema: {message}")]
    BadSchema { path: String, message: String },
    #[error("{path}: {message}")]
    Layout { path: String, message: String },
    #[error("{0}")]
    Config(String),
    #[error("schema registry: {0}")]
    Registry(#[from] RegistryError),
}

/// `schemas/compatibility.toml`.
#[derive(Debug, Deserialize)]
struct CompatFile {
    default: Level,
    #[serde(default)]
    subjects: BTreeMap<String, Level>,
}

/// One `.avsc` file.
#[derive(Debug, Clone)]
pub struct Version {
    pub version: u32,
    pub path: PathBuf,
    pub text: String,
    pub schema: Schema,
}

/// All versions of one subject, ascending.
#[derive(Debug, Clone)]
pub struct Subject {
    pub name: String,
    pub dir: String,
    pub level: Level,
    pub versions: Vec<Version>,
}

/// What the gate found for one subject.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubjectReport {
    pub subject: String,
    pub level: &'static str,
    pub versions: u32,
    pub problems: Vec<String>,
    /// Registry ids per version, when a registry was given.
    pub ids: Vec<u32>,
}

/// Loads `<root>/avro/*/v*.avsc` and `<root>/compatibility.toml`.
pub fn load(root: &Path) -> Result<Vec<Subject>, GateError> {
    let compat_path = root.join("compatibility.toml");
    let compat: CompatFile = {
        let text = std::fs::read_to_string(&compat_path).map_err(|source| GateError::Io {
            path: compat_path.display().to_string(),
            source,
        })?;
        toml::from_str(&text)
            .map_err(|e| GateError::Config(format!("{}: {}", compat_path.display(), e.message())))?
    };
    let avro = root.join("avro");
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(&avro)
        .map_err(|source| GateError::Io {
            path: avro.display().to_string(),
            source,
        })?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    let mut subjects = Vec::new();
    for dir in dirs {
        let dir_name = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let mut files: Vec<(u32, PathBuf)> = Vec::new();
        for entry in std::fs::read_dir(&dir).map_err(|source| GateError::Io {
            path: dir.display().to_string(),
            source,
        })? {
            let path = entry
                .map_err(|source| GateError::Io {
                    path: dir.display().to_string(),
                    source,
                })?
                .path();
            let Some(name) = path.file_name().map(|n| n.to_string_lossy().into_owned()) else {
                continue;
            };
            if !name.ends_with(".avsc") {
                continue;
            }
            let version = name
                .strip_prefix('v')
                .and_then(|s| s.strip_suffix(".avsc"))
                .and_then(|s| s.parse::<u32>().ok())
                .ok_or_else(|| GateError::Layout {
                    path: path.display().to_string(),
                    message: "schema files must be named v<N>.avsc".into(),
                })?;
            files.push((version, path));
        }
        files.sort();
        if files.is_empty() {
            continue;
        }
        let mut versions = Vec::new();
        for (i, (version, path)) in files.into_iter().enumerate() {
            if version != i as u32 + 1 {
                return Err(GateError::Layout {
                    path: path.display().to_string(),
                    message: format!(
                        "versions must run 1, 2, 3...; found v{version} at position {}",
                        i + 1
                    ),
                });
            }
            let text = std::fs::read_to_string(&path).map_err(|source| GateError::Io {
                path: path.display().to_string(),
                source,
            })?;
            let schema = Schema::parse_str(&text).map_err(|e| GateError::BadSchema {
                path: path.display().to_string(),
                message: e.to_string(),
            })?;
            versions.push(Version {
                version,
                path,
                text,
                schema,
            });
        }
        let name = record_name(&versions[0].schema).ok_or_else(|| GateError::Layout {
            path: versions[0].path.display().to_string(),
            message: "top-level schema must be a named record".into(),
        })?;
        for v in &versions[1..] {
            let n = record_name(&v.schema);
            if n.as_deref() != Some(name.as_str()) {
                return Err(GateError::Layout {
                    path: v.path.display().to_string(),
                    message: format!(
                        "record is named {n:?}, but v1 of this folder is {name}: one subject per folder"
                    ),
                });
            }
        }
        let level = compat
            .subjects
            .get(&name)
            .copied()
            .unwrap_or(compat.default);
        subjects.push(Subject {
            name,
            dir: dir_name,
            level,
            versions,
        });
    }
    if subjects.is_empty() {
        return Err(GateError::Layout {
            path: avro.display().to_string(),
            message: "no schemas found".into(),
        });
    }
    Ok(subjects)
}

fn record_name(schema: &Schema) -> Option<String> {
    match schema {
        Schema::Record(r) => Some(r.name.fullname(None)),
        _ => None,
    }
}

/// Pure check of one subject's history under its level (the registry's own rules, shared).
pub fn check_subject(subject: &Subject) -> Vec<String> {
    let mut problems = Vec::new();
    for (i, new) in subject.versions.iter().enumerate().skip(1) {
        let previous: Vec<Previous<'_>> = subject.versions[..i]
            .iter()
            .map(|v| Previous {
                version: v.version,
                schema: &v.schema,
            })
            .collect();
        for m in compat::check(subject.level, &new.schema, &previous) {
            problems.push(format!(
                "v{}: {m} ({} requires it)",
                new.version, subject.level
            ));
        }
    }
    problems
}

/// Runs the gate over `root`; registers with `registry` when given.
pub async fn run_gate(
    root: &Path,
    registry: Option<&str>,
) -> Result<Vec<SubjectReport>, GateError> {
    let subjects = load(root)?;
    let client = match registry {
        Some(url) => Some(Registry::new(RegistryConfig {
            url: url.to_string(),
            ..RegistryConfig::default()
        })?),
        None => None,
    };
    let mut reports = Vec::new();
    for subject in &subjects {
        let mut report = SubjectReport {
            subject: subject.name.clone(),
            level: subject.level.as_str(),
            versions: subject.versions.len() as u32,
            problems: check_subject(subject),
            ids: Vec::new(),
        };
        if let (Some(client), true) = (&client, report.problems.is_empty()) {
            client
                .set_compatibility(&subject.name, subject.level.as_str())
                .await?;
            for v in &subject.versions {
                if !client.is_compatible(&subject.name, &v.text).await? {
                    report.problems.push(format!(
                        "registry says v{} is incompatible with what {} holds",
                        v.version, subject.name
                    ));
                    break;
                }
                match client.register(&subject.name, &v.text).await {
                    Ok(id) => report.ids.push(id),
                    Err(RegistryError::Http {
                        status: 409,
                        message,
                        ..
                    }) => {
                        report.problems.push(format!(
                            "registry refused v{} as incompatible: {message}",
                            v.version
                        ));
                        break;
                    }
                    Err(e) => return Err(e.into()),
                }
            }
        }
        reports.push(report);
    }
    Ok(reports)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn subject(level: Level, texts: &[&str]) -> Subject {
        Subject {
            name: "t.R".into(),
            dir: "r".into(),
            level,
            versions: texts
                .iter()
                .enumerate()
                .map(|(i, t)| Version {
                    version: i as u32 + 1,
                    path: PathBuf::from(format!("v{}.avsc", i + 1)),
                    text: t.to_string(),
                    schema: Schema::parse_str(t).unwrap(),
                })
                .collect(),
        }
    }

    const V1: &str =
        r#"{"type":"record","name":"R","namespace":"t","fields":[{"name":"a","type":"long"}]}"#;
    const V2_OPTIONAL: &str = r#"{"type":"record","name":"R","namespace":"t","fields":[{"name":"a","type":"long"},{"name":"b","type":["null","string"],"default":null}]}"#;
    const V2_REQUIRED: &str = r#"{"type":"record","name":"R","namespace":"t","fields":[{"name":"a","type":"long"},{"name":"b","type":"string"}]}"#;
    const V_TYPE_CHANGE: &str =
        r#"{"type":"record","name":"R","namespace":"t","fields":[{"name":"a","type":"string"}]}"#;

    #[test]
    fn optional_field_with_default_is_compatible_everywhere() {
        for level in [
            Level::Backward,
            Level::BackwardTransitive,
            Level::Forward,
            Level::Full,
            Level::FullTransitive,
        ] {
            assert!(
                check_subject(&subject(level, &[V1, V2_OPTIONAL])).is_empty(),
                "{level:?}"
            );
        }
    }

    #[test]
    fn required_field_without_default_breaks_backward() {
        let p = check_subject(&subject(Level::BackwardTransitive, &[V1, V2_REQUIRED]));
        assert_eq!(p.len(), 1, "{p:?}");
        // ...but a forward-only level accepts it (old readers ignore the new field).
        assert!(check_subject(&subject(Level::Forward, &[V1, V2_REQUIRED])).is_empty());
    }

    #[test]
    fn type_change_breaks_both_directions() {
        let p = check_subject(&subject(Level::Full, &[V1, V_TYPE_CHANGE]));
        assert_eq!(p.len(), 2, "{p:?}");
        assert!(check_subject(&subject(Level::None, &[V1, V_TYPE_CHANGE])).is_empty());
    }

    #[test]
    fn transitive_checks_every_predecessor() {
        // v2 adds `b` with a default; v3 removes the default. v3 reads v2 data (it has `b`) but not
        // v1 data: only the transitive level sees that.
        let v2 = r#"{"type":"record","name":"R","namespace":"t","fields":[{"name":"a","type":"long"},{"name":"b","type":"string","default":"x"}]}"#;
        let texts = [V1, v2, V2_REQUIRED];
        assert!(check_subject(&subject(Level::Backward, &texts)).is_empty());
        let p = check_subject(&subject(Level::BackwardTransitive, &texts));
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(
            p[0].starts_with(
                "v3: BACKWARD: the new schema cannot read data written with version 1"
            ),
            "{p:?}"
        );
    }
}
