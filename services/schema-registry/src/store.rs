//! The registry's state and rules: registering, lookups, compatibility decisions, configs and
//! deletes. No HTTP here; the only I/O is the optional durable log (see `persist`).
//!
//! Guarantees:
//! - every mutation is planned as a list of events against the current state, written to the log
//!   (one fsynced line) and only then applied, so memory never runs ahead of disk and a failed
//!   write changes nothing;
//! - global schema ids are allocated from a counter that only grows, and a schema record is never
//!   removed (hard deletes remove subject versions only), so an id is never reused and always
//!   resolves to the same schema text;
//! - two submissions are the same schema iff their identity keys are equal (sorted-key JSON plus
//!   references, see `schema::identity_key`): a changed default is a different schema.
//!
//! Why one file (~890 lines): the store's invariants (ids never reused, identity keys, soft vs hard
//! delete) hold across every operation; they are kept in one place with their tests.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::Path;
use std::str::FromStr;

use apache_avro::Schema;
use serde::{Deserialize, Serialize};

use crate::compat::{self, Level, Previous};
use crate::error::RegistryError;
use crate::persist::Log;
use crate::schema::{Reference, SchemaInput, SchemaType, identity_key, parse_avro};

/// Largest version number and id Confluent allows (Java `int`).
const MAX_NUMBER: u32 = i32::MAX as u32;

/// One schema record: immutable once created.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredSchema {
    pub id: u32,
    pub schema: String,
    pub schema_type: SchemaType,
    pub references: Vec<Reference>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct VersionEntry {
    id: u32,
    deleted: bool,
}

#[derive(Debug, Clone, Default)]
struct SubjectState {
    versions: BTreeMap<u32, VersionEntry>,
    level: Option<Level>,
}

impl SubjectState {
    fn is_empty(&self) -> bool {
        self.versions.is_empty() && self.level.is_none()
    }

    fn visible(
        &self,
        include_deleted: bool,
    ) -> impl DoubleEndedIterator<Item = (u32, VersionEntry)> {
        self.versions
            .iter()
            .filter(move |(_, e)| include_deleted || !e.deleted)
            .map(|(v, e)| (*v, *e))
    }

    fn has_visible(&self, include_deleted: bool) -> bool {
        self.visible(include_deleted).next().is_some()
    }
}

/// A state change, as written to the log. Applying an event never fails.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Event {
    Schema {
        id: u32,
        schema: String,
        #[serde(rename = "schemaType", default)]
        schema_type: SchemaType,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        references: Vec<Reference>,
    },
    Version {
        subject: String,
        version: u32,
        id: u32,
    },
    SoftDelete {
        subject: String,
        version: u32,
    },
    HardDelete {
        subject: String,
        version: u32,
    },
    SubjectLevel {
        subject: String,
        level: Option<Level>,
    },
    GlobalLevel {
        level: Option<Level>,
    },
}

/// One line of the log: a transaction's events, applied together.
#[derive(Debug, Serialize, Deserialize)]
struct Txn {
    seq: u64,
    events: Vec<Event>,
}

#[derive(Serialize)]
struct TxnRef<'a> {
    seq: u64,
    events: &'a [Event],
}

/// Which version a request names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VersionSel {
    Latest,
    Number(u32),
}

impl FromStr for VersionSel {
    type Err = RegistryError;

    /// `latest`, `-1` (Confluent's alias for latest) or an integer in 1..=2^31-1; else 42202.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim();
        if t.eq_ignore_ascii_case("latest") || t == "-1" {
            return Ok(VersionSel::Latest);
        }
        match t.parse::<u32>() {
            Ok(n) if (1..=MAX_NUMBER).contains(&n) => Ok(VersionSel::Number(n)),
            _ => Err(RegistryError::InvalidVersion(s.to_string())),
        }
    }
}

/// A subject version as returned by `GET /subjects/{s}/versions/{v}` and the lookup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SubjectVersion {
    pub subject: String,
    pub version: u32,
    pub id: u32,
    #[serde(rename = "schemaType", skip_serializing_if = "is_avro")]
    pub schema_type: SchemaType,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub references: Vec<Reference>,
    pub schema: String,
}

/// A schema as returned by `GET /schemas/ids/{id}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SchemaView {
    pub schema: String,
    #[serde(rename = "schemaType", skip_serializing_if = "is_avro")]
    pub schema_type: SchemaType,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub references: Vec<Reference>,
}

/// A (subject, version) pair, as returned by `GET /schemas/ids/{id}/versions`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SubjectVersionRef {
    pub subject: String,
    pub version: u32,
}

/// The answer of a compatibility check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CompatibilityResult {
    pub is_compatible: bool,
    pub messages: Vec<String>,
}

fn is_avro(t: &SchemaType) -> bool {
    *t == SchemaType::Avro
}

/// The in-memory state, rebuilt from the log on start.
#[derive(Debug, Clone)]
struct State {
    schemas: BTreeMap<u32, StoredSchema>,
    by_key: HashMap<String, u32>,
    subjects: BTreeMap<String, SubjectState>,
    global: Option<Level>,
    next_id: u32,
}

impl Default for State {
    fn default() -> Self {
        State {
            schemas: BTreeMap::new(),
            by_key: HashMap::new(),
            subjects: BTreeMap::new(),
            global: None,
            next_id: 1,
        }
    }
}

impl State {
    fn apply(&mut self, event: Event) {
        match event {
            Event::Schema {
                id,
                schema,
                schema_type,
                references,
            } => {
                if let Ok(key) = identity_key(schema_type, &schema, &references) {
                    self.by_key.entry(key).or_insert(id);
                }
                self.next_id = self.next_id.max(id.saturating_add(1));
                self.schemas.entry(id).or_insert(StoredSchema {
                    id,
                    schema,
                    schema_type,
                    references,
                });
            }
            Event::Version {
                subject,
                version,
                id,
            } => {
                self.subjects
                    .entry(subject)
                    .or_default()
                    .versions
                    .insert(version, VersionEntry { id, deleted: false });
            }
            Event::SoftDelete { subject, version } => {
                if let Some(e) = self
                    .subjects
                    .get_mut(&subject)
                    .and_then(|s| s.versions.get_mut(&version))
                {
                    e.deleted = true;
                }
            }
            Event::HardDelete { subject, version } => {
                if let Some(s) = self.subjects.get_mut(&subject) {
                    s.versions.remove(&version);
                    if s.is_empty() {
                        self.subjects.remove(&subject);
                    }
                }
            }
            Event::SubjectLevel { subject, level } => {
                let s = self.subjects.entry(subject.clone()).or_default();
                s.level = level;
                if s.is_empty() {
                    self.subjects.remove(&subject);
                }
            }
            Event::GlobalLevel { level } => self.global = level,
        }
    }

    fn subject(&self, name: &str, include_deleted: bool) -> Result<&SubjectState, RegistryError> {
        self.subjects
            .get(name)
            .filter(|s| s.has_visible(include_deleted))
            .ok_or_else(|| RegistryError::SubjectNotFound(name.to_string()))
    }

    fn stored(&self, id: u32) -> Result<&StoredSchema, RegistryError> {
        self.schemas
            .get(&id)
            .ok_or_else(|| RegistryError::Internal(format!("schema id {id} is missing")))
    }

    /// Resolves a version of a subject: 40401 if the subject has no visible version, 40402 if
    /// the named version is not visible.
    fn resolve(
        &self,
        subject: &str,
        sel: VersionSel,
        include_deleted: bool,
    ) -> Result<(u32, VersionEntry), RegistryError> {
        let st = self.subject(subject, include_deleted)?;
        let found = match sel {
            VersionSel::Latest => st.visible(include_deleted).next_back(),
            VersionSel::Number(n) => st
                .versions
                .get(&n)
                .filter(|e| include_deleted || !e.deleted)
                .map(|e| (n, *e)),
        };
        found.ok_or_else(|| {
            RegistryError::VersionNotFound(match sel {
                VersionSel::Latest => "latest".to_string(),
                VersionSel::Number(n) => n.to_string(),
            })
        })
    }

    fn view(&self, subject: &str, version: u32, id: u32) -> Result<SubjectVersion, RegistryError> {
        let s = self.stored(id)?;
        Ok(SubjectVersion {
            subject: subject.to_string(),
            version,
            id,
            schema_type: s.schema_type,
            references: s.references.clone(),
            schema: s.schema.clone(),
        })
    }

    /// The texts of every schema `refs` names, transitively. A missing reference is 42201.
    fn referenced_texts(&self, refs: &[Reference]) -> Result<Vec<String>, RegistryError> {
        let mut out = Vec::new();
        let mut seen: HashSet<(&str, u32)> = HashSet::new();
        let mut stack: Vec<&Reference> = refs.iter().collect();
        while let Some(r) = stack.pop() {
            if !seen.insert((r.subject.as_str(), r.version)) {
                continue;
            }
            let entry = self
                .subjects
                .get(&r.subject)
                .and_then(|s| s.versions.get(&r.version))
                .ok_or_else(|| {
                    RegistryError::InvalidSchema(format!(
                        "Invalid schema: reference '{}' to subject '{}' version {} does not exist",
                        r.name, r.subject, r.version
                    ))
                })?;
            let stored = self.stored(entry.id)?;
            out.push(stored.schema.clone());
            stack.extend(stored.references.iter());
        }
        Ok(out)
    }

    /// Validates a submitted schema: type, references and Avro syntax.
    fn parse_input(&self, input: &SchemaInput) -> Result<Schema, RegistryError> {
        let texts = self.referenced_texts(&input.references)?;
        parse_avro(&input.schema, &texts)
    }

    fn parse_stored(&self, id: u32) -> Result<Schema, RegistryError> {
        let s = self.stored(id)?;
        let texts = self.referenced_texts(&s.references)?;
        parse_avro(&s.schema, &texts).map_err(|e| {
            RegistryError::Internal(format!("stored schema {id} no longer parses: {e}"))
        })
    }

    /// Live (not soft-deleted) versions of `subject`, oldest first, parsed: only the latest
    /// unless `all`.
    fn previous(&self, subject: &str, all: bool) -> Result<Vec<(u32, Schema)>, RegistryError> {
        let Some(st) = self.subjects.get(subject) else {
            return Ok(Vec::new());
        };
        let live: Vec<(u32, VersionEntry)> = if all {
            st.visible(false).collect()
        } else {
            st.visible(false).next_back().into_iter().collect()
        };
        live.into_iter()
            .map(|(v, e)| self.parse_stored(e.id).map(|s| (v, s)))
            .collect()
    }

    /// Live versions (any subject) whose schema references `subject`/`version`.
    fn referrers(&self, subject: &str, version: u32) -> Vec<(String, u32, u32)> {
        let mut out = Vec::new();
        for (name, st) in &self.subjects {
            for (v, e) in st.visible(false) {
                if let Some(s) = self.schemas.get(&e.id)
                    && s.references
                        .iter()
                        .any(|r| r.subject == subject && r.version == version)
                {
                    out.push((name.clone(), v, e.id));
                }
            }
        }
        out
    }

    fn ensure_unreferenced(&self, subject: &str, version: u32) -> Result<(), RegistryError> {
        match self.referrers(subject, version).first() {
            None => Ok(()),
            Some((s, v, id)) => Err(RegistryError::ReferenceExists(format!(
                "One or more references exist to the schema {{subject={subject},version={version}}}: \
                 referenced by subject '{s}' version {v} (id {id})"
            ))),
        }
    }
}

/// The registry: state plus (optionally) its durable log.
#[derive(Debug)]
pub struct Registry {
    state: State,
    default_level: Level,
    log: Option<Log>,
    seq: u64,
}

impl Registry {
    /// A registry that keeps nothing on disk (unit tests).
    pub fn in_memory(default_level: Level) -> Self {
        Registry {
            state: State::default(),
            default_level,
            log: None,
            seq: 0,
        }
    }

    /// Opens (or creates) the registry stored in `dir`, replaying its log.
    pub fn open(dir: &Path, default_level: Level) -> Result<Self, RegistryError> {
        let (log, txns) = Log::open::<Txn>(dir)?;
        let mut state = State::default();
        let mut seq = 0;
        for txn in txns {
            seq = seq.max(txn.seq);
            for event in txn.events {
                state.apply(event);
            }
        }
        tracing::info!(
            path = %log.path().display(),
            transactions = seq,
            schemas = state.schemas.len(),
            subjects = state.subjects.len(),
            "registry loaded"
        );
        Ok(Registry {
            state,
            default_level,
            log: Some(log),
            seq,
        })
    }

    /// Writes `events` durably as one transaction, then applies them.
    fn commit(&mut self, events: Vec<Event>) -> Result<(), RegistryError> {
        if events.is_empty() {
            return Ok(());
        }
        let seq = self.seq + 1;
        if let Some(log) = self.log.as_mut() {
            log.append(&TxnRef {
                seq,
                events: &events,
            })?;
        }
        self.seq = seq;
        for e in events {
            self.state.apply(e);
        }
        Ok(())
    }

    // ----- registering and lookups -----

    /// Registers `input` under `subject` and returns its global id. An identical schema already
    /// live in the subject returns its id without a new version; a schema identical to one
    /// registered elsewhere reuses that id. Fails with 42201 (invalid) or 409 (incompatible).
    pub fn register(&mut self, subject: &str, input: &SchemaInput) -> Result<u32, RegistryError> {
        validate_subject(subject)?;
        let parsed = self.state.parse_input(input)?;
        let key = identity_key(input.schema_type, &input.schema, &input.references)?;
        let existing = self.state.by_key.get(&key).copied();
        if let (Some(id), Some(st)) = (existing, self.state.subjects.get(subject))
            && st.visible(false).any(|(_, e)| e.id == id)
        {
            return Ok(id);
        }
        let level = self.level_for(subject);
        if level != Level::None {
            let previous = self.state.previous(subject, level.is_transitive())?;
            let previous: Vec<Previous<'_>> = previous
                .iter()
                .map(|(version, schema)| Previous {
                    version: *version,
                    schema,
                })
                .collect();
            let details = compat::check(level, &parsed, &previous);
            if !details.is_empty() {
                return Err(RegistryError::Incompatible {
                    subject: subject.to_string(),
                    details,
                });
            }
        }
        let mut events = Vec::with_capacity(2);
        let id = match existing {
            Some(id) => id,
            None => {
                let id = self.state.next_id;
                if id > MAX_NUMBER {
                    return Err(RegistryError::Internal("schema ids exhausted".to_string()));
                }
                events.push(Event::Schema {
                    id,
                    schema: input.schema.clone(),
                    schema_type: input.schema_type,
                    references: input.references.clone(),
                });
                id
            }
        };
        let version = self
            .state
            .subjects
            .get(subject)
            .and_then(|s| s.versions.keys().next_back().copied())
            .unwrap_or(0)
            + 1;
        if version > MAX_NUMBER {
            return Err(RegistryError::Internal("versions exhausted".to_string()));
        }
        events.push(Event::Version {
            subject: subject.to_string(),
            version,
            id,
        });
        self.commit(events)?;
        tracing::info!(subject, version, id, "schema registered");
        Ok(id)
    }

    /// Is `input` registered under `subject`? Returns the latest matching version.
    pub fn lookup(
        &self,
        subject: &str,
        input: &SchemaInput,
        include_deleted: bool,
    ) -> Result<SubjectVersion, RegistryError> {
        let st = self.state.subject(subject, include_deleted)?;
        self.state.parse_input(input)?;
        let key = identity_key(input.schema_type, &input.schema, &input.references)?;
        let id = *self
            .state
            .by_key
            .get(&key)
            .ok_or(RegistryError::SchemaNotFound)?;
        let (version, _) = st
            .visible(include_deleted)
            .rev()
            .find(|(_, e)| e.id == id)
            .ok_or(RegistryError::SchemaNotFound)?;
        self.state.view(subject, version, id)
    }

    pub fn schema_by_id(&self, id: u32) -> Result<SchemaView, RegistryError> {
        let s = self
            .state
            .schemas
            .get(&id)
            .ok_or_else(|| RegistryError::SchemaIdNotFound(id.to_string()))?;
        Ok(SchemaView {
            schema: s.schema.clone(),
            schema_type: s.schema_type,
            references: s.references.clone(),
        })
    }

    /// The subject versions that use schema `id`.
    pub fn id_versions(
        &self,
        id: u32,
        include_deleted: bool,
    ) -> Result<Vec<SubjectVersionRef>, RegistryError> {
        if !self.state.schemas.contains_key(&id) {
            return Err(RegistryError::SchemaIdNotFound(id.to_string()));
        }
        let mut out = Vec::new();
        for (name, st) in &self.state.subjects {
            for (v, e) in st.visible(include_deleted) {
                if e.id == id {
                    out.push(SubjectVersionRef {
                        subject: name.clone(),
                        version: v,
                    });
                }
            }
        }
        Ok(out)
    }

    pub fn subjects(&self, include_deleted: bool) -> Vec<String> {
        self.state
            .subjects
            .iter()
            .filter(|(_, s)| s.has_visible(include_deleted))
            .map(|(n, _)| n.clone())
            .collect()
    }

    pub fn versions(
        &self,
        subject: &str,
        include_deleted: bool,
    ) -> Result<Vec<u32>, RegistryError> {
        let st = self.state.subject(subject, include_deleted)?;
        Ok(st.visible(include_deleted).map(|(v, _)| v).collect())
    }

    pub fn version(
        &self,
        subject: &str,
        sel: VersionSel,
        include_deleted: bool,
    ) -> Result<SubjectVersion, RegistryError> {
        let (version, e) = self.state.resolve(subject, sel, include_deleted)?;
        self.state.view(subject, version, e.id)
    }

    /// Ids of the live schemas that reference this subject version.
    pub fn referenced_by(&self, subject: &str, sel: VersionSel) -> Result<Vec<u32>, RegistryError> {
        let (version, _) = self.state.resolve(subject, sel, false)?;
        let ids: BTreeSet<u32> = self
            .state
            .referrers(subject, version)
            .into_iter()
            .map(|(_, _, id)| id)
            .collect();
        Ok(ids.into_iter().collect())
    }

    // ----- compatibility -----

    /// Checks `input` against `subject`. With no version: against what the subject's level
    /// requires (every live version for `*_TRANSITIVE`, the latest otherwise); an unknown subject
    /// is compatible. With a version: against that version only (`latest` of an unknown subject
    /// is compatible, a numbered version of an unknown subject is 40401).
    pub fn check_compatibility(
        &self,
        subject: &str,
        input: &SchemaInput,
        sel: Option<VersionSel>,
    ) -> Result<CompatibilityResult, RegistryError> {
        let parsed = self.state.parse_input(input)?;
        let level = self.level_for(subject);
        let has_live = self
            .state
            .subjects
            .get(subject)
            .is_some_and(|s| s.has_visible(false));
        let previous = match sel {
            None => self.state.previous(subject, level.is_transitive())?,
            Some(VersionSel::Latest) if !has_live => Vec::new(),
            Some(sel) => {
                let (v, e) = self.state.resolve(subject, sel, false)?;
                vec![(v, self.state.parse_stored(e.id)?)]
            }
        };
        if level == Level::None {
            return Ok(CompatibilityResult {
                is_compatible: true,
                messages: Vec::new(),
            });
        }
        let previous: Vec<Previous<'_>> = previous
            .iter()
            .map(|(version, schema)| Previous {
                version: *version,
                schema,
            })
            .collect();
        let messages = compat::check(level, &parsed, &previous);
        Ok(CompatibilityResult {
            is_compatible: messages.is_empty(),
            messages,
        })
    }

    // ----- configuration -----

    /// The level that governs `subject`: its own, else the global one.
    pub fn level_for(&self, subject: &str) -> Level {
        self.subject_level(subject)
            .unwrap_or_else(|| self.global_level())
    }

    pub fn global_level(&self) -> Level {
        self.state.global.unwrap_or(self.default_level)
    }

    pub fn set_global_level(&mut self, level: Level) -> Result<Level, RegistryError> {
        if self.state.global != Some(level) {
            self.commit(vec![Event::GlobalLevel { level: Some(level) }])?;
        }
        Ok(level)
    }

    /// Forgets a global level set through the API (back to the configured default). Returns the
    /// level that was in force before.
    pub fn reset_global_level(&mut self) -> Result<Level, RegistryError> {
        let before = self.global_level();
        if self.state.global.is_some() {
            self.commit(vec![Event::GlobalLevel { level: None }])?;
        }
        Ok(before)
    }

    pub fn subject_level(&self, subject: &str) -> Option<Level> {
        self.state.subjects.get(subject).and_then(|s| s.level)
    }

    /// `GET /config/{subject}`: the subject's own level, 40408 if it has none (unless
    /// `default_to_global`).
    pub fn subject_config(
        &self,
        subject: &str,
        default_to_global: bool,
    ) -> Result<Level, RegistryError> {
        match self.subject_level(subject) {
            Some(l) => Ok(l),
            None if default_to_global => Ok(self.global_level()),
            None => Err(RegistryError::SubjectLevelNotConfigured(
                subject.to_string(),
            )),
        }
    }

    pub fn set_subject_level(
        &mut self,
        subject: &str,
        level: Level,
    ) -> Result<Level, RegistryError> {
        validate_subject(subject)?;
        if self.subject_level(subject) != Some(level) {
            self.commit(vec![Event::SubjectLevel {
                subject: subject.to_string(),
                level: Some(level),
            }])?;
        }
        Ok(level)
    }

    /// Removes the subject's own level. Returns the level that was in force before; 40401 if the
    /// subject is unknown and has no level.
    pub fn delete_subject_level(&mut self, subject: &str) -> Result<Level, RegistryError> {
        let before = self.level_for(subject);
        match self.state.subjects.get(subject) {
            None => Err(RegistryError::SubjectNotFound(subject.to_string())),
            Some(s) if s.level.is_none() => Ok(before),
            Some(_) => {
                self.commit(vec![Event::SubjectLevel {
                    subject: subject.to_string(),
                    level: None,
                }])?;
                Ok(before)
            }
        }
    }

    // ----- deletes -----

    /// Soft-deletes every live version of `subject` (or, with `permanent`, removes every version of
    /// an already soft-deleted subject together with its level). Returns the affected versions.
    pub fn delete_subject(
        &mut self,
        subject: &str,
        permanent: bool,
    ) -> Result<Vec<u32>, RegistryError> {
        let st = self.state.subject(subject, true)?;
        let live: Vec<u32> = st.visible(false).map(|(v, _)| v).collect();
        if permanent {
            if !live.is_empty() {
                return Err(RegistryError::SubjectNotSoftDeleted(subject.to_string()));
            }
            let all: Vec<u32> = st.versions.keys().copied().collect();
            for v in &all {
                self.state.ensure_unreferenced(subject, *v)?;
            }
            let mut events: Vec<Event> = all
                .iter()
                .map(|v| Event::HardDelete {
                    subject: subject.to_string(),
                    version: *v,
                })
                .collect();
            if st.level.is_some() {
                events.push(Event::SubjectLevel {
                    subject: subject.to_string(),
                    level: None,
                });
            }
            self.commit(events)?;
            tracing::info!(subject, versions = ?all, "subject permanently deleted");
            Ok(all)
        } else {
            if live.is_empty() {
                return Err(RegistryError::SubjectSoftDeleted(subject.to_string()));
            }
            for v in &live {
                self.state.ensure_unreferenced(subject, *v)?;
            }
            let events = live
                .iter()
                .map(|v| Event::SoftDelete {
                    subject: subject.to_string(),
                    version: *v,
                })
                .collect();
            self.commit(events)?;
            tracing::info!(subject, versions = ?live, "subject soft-deleted");
            Ok(live)
        }
    }

    /// Soft-deletes one version (or, with `permanent`, removes an already soft-deleted one).
    pub fn delete_version(
        &mut self,
        subject: &str,
        sel: VersionSel,
        permanent: bool,
    ) -> Result<u32, RegistryError> {
        let (version, entry) = self.state.resolve(subject, sel, true)?;
        if sel == VersionSel::Latest && !permanent {
            // `latest` names the latest live version for a soft delete.
            let (v, e) = self.state.resolve(subject, sel, false)?;
            return self.soft_delete_version(subject, v, e);
        }
        if permanent {
            if !entry.deleted {
                return Err(RegistryError::VersionNotSoftDeleted(
                    subject.to_string(),
                    version,
                ));
            }
            self.state.ensure_unreferenced(subject, version)?;
            self.commit(vec![Event::HardDelete {
                subject: subject.to_string(),
                version,
            }])?;
            Ok(version)
        } else {
            self.soft_delete_version(subject, version, entry)
        }
    }

    fn soft_delete_version(
        &mut self,
        subject: &str,
        version: u32,
        entry: VersionEntry,
    ) -> Result<u32, RegistryError> {
        if entry.deleted {
            return Err(RegistryError::VersionSoftDeleted(
                subject.to_string(),
                version,
            ));
        }
        self.state.ensure_unreferenced(subject, version)?;
        self.commit(vec![Event::SoftDelete {
            subject: subject.to_string(),
            version,
        }])?;
        Ok(version)
    }

    // ----- gauges -----

    pub fn schema_count(&self) -> usize {
        self.state.schemas.len()
    }

    /// Subjects with at least one live version.
    pub fn subject_count(&self) -> usize {
        self.state
            .subjects
            .values()
            .filter(|s| s.has_visible(false))
            .count()
    }
}

fn validate_subject(subject: &str) -> Result<(), RegistryError> {
    if subject.is_empty() || subject.chars().any(char::is_control) {
        return Err(RegistryError::InvalidSubject(
            subject.escape_debug().to_string(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests;
