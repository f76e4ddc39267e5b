//! Topology as code: the declarative topic and consumer-group file (`topology/topology.toml`), its
//! validation, the diff against a live cluster (`plan`, read-only) and its application (`apply`:
//! create, add partitions, align configs; delete only when asked). The model and the diff are pure;
//! cluster I/O goes through rdkafka's admin API. Applying twice is harmless (idempotent).
//!
//! Why one file (~770 lines): model, validation and diff are one pure pipeline over the same types;
//! about a third is their unit tests. Cluster I/O is the thin tail.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

use rdkafka::admin::{
    AdminClient, AdminOptions, AlterConfig, NewPartitions, NewTopic, ResourceSpecifier,
    TopicReplication,
};
use rdkafka::client::DefaultClientContext;
use serde::Deserialize;
use tillstream_contracts::EventKind;
use tillstream_runtime::kafka::KafkaConfig;

#[derive(Debug, thiserror::Error)]
pub enum TopologyError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: String, message: String },
    #[error("topology is invalid: {0}")]
    Invalid(String),
    #[error("unknown profile {0:?} (the file defines {1})")]
    UnknownProfile(String, String),
    #[error("cannot reach Kafka at {brokers}: {detail}")]
    Unreachable { brokers: String, detail: String },
    #[error("Kafka refused {action}: {detail}")]
    Refused { action: String, detail: String },
    #[error(
        "the broker does not support {action} (tansu lacks it; Apache Kafka has it): change it by hand or recreate the topic"
    )]
    Unsupported { action: String },
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopologyFile {
    pub defaults: Defaults,
    #[serde(default)]
    pub profiles: BTreeMap<String, Profile>,
    pub topics: Vec<TopicSpec>,
    #[serde(default)]
    pub consumer_groups: Vec<GroupSpec>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Defaults {
    pub replication_factor: i32,
    pub partitions: i32,
    #[serde(default)]
    pub config: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    pub max_replication_factor: Option<i32>,
    pub max_partitions: Option<i32>,
    #[serde(default)]
    pub drop_config: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopicSpec {
    pub name: String,
    pub purpose: String,
    pub owner: String,
    pub key: String,
    pub value_subjects: Vec<String>,
    pub retention_ms: Option<i64>,
    pub cleanup_policy: String,
    pub partitions: Option<i32>,
    pub replication_factor: Option<i32>,
    #[serde(default)]
    pub config: BTreeMap<String, String>,
    /// Must have the same partition count as this topic (state co-partitioned with its input).
    pub copartition_with: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupSpec {
    pub name: String,
    pub service: String,
    pub topics: Vec<String>,
    pub purpose: String,
}

/// A topic as it should exist on the cluster for one profile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DesiredTopic {
    pub name: String,
    pub partitions: i32,
    pub replication_factor: i32,
    pub config: BTreeMap<String, String>,
}

/// A topic as it exists on the cluster. `config` is `None` when the broker cannot describe configs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveTopic {
    pub name: String,
    pub partitions: i32,
    pub replication_factor: i32,
    pub config: Option<BTreeMap<String, String>>,
}

/// One line of a plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    Create(DesiredTopic),
    AddPartitions {
        topic: String,
        from: i32,
        to: i32,
    },
    AlterConfig {
        topic: String,
        key: String,
        from: Option<String>,
        to: String,
    },
    /// Cannot be fixed by apply (Kafka cannot shrink partitions; RF changes need a reassignment).
    Drift {
        topic: String,
        what: String,
    },
    /// Configs could not be read (broker lacks DescribeConfigs): nothing is known to be wrong.
    ConfigUnknown {
        topic: String,
    },
    /// A `tillstream.` topic on the cluster the file does not list.
    Unmanaged {
        topic: String,
    },
    Delete {
        topic: String,
    },
}

impl Change {
    /// True if `apply` would act on it.
    pub fn is_actionable(&self) -> bool {
        matches!(
            self,
            Change::Create(_)
                | Change::AddPartitions { .. }
                | Change::AlterConfig { .. }
                | Change::Delete { .. }
        )
    }

    /// True if the live cluster differs from the file in a way that matters.
    pub fn is_drift(&self) -> bool {
        !matches!(
            self,
            Change::ConfigUnknown { .. } | Change::Unmanaged { .. }
        )
    }
}

impl std::fmt::Display for Change {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Change::Create(t) => write!(
                f,
                "+ create  {} (partitions={}, rf={}, {})",
                t.name,
                t.partitions,
                t.replication_factor,
                t.config
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            Change::AddPartitions { topic, from, to } => {
                write!(f, "~ partitions {topic}: {from} -> {to}")
            }
            Change::AlterConfig {
                topic,
                key,
                from,
                to,
            } => write!(
                f,
                "~ config  {topic}: {key} {} -> {to}",
                from.as_deref().unwrap_or("(unset)")
            ),
            Change::Drift { topic, what } => {
                write!(f, "! drift   {topic}: {what} (apply cannot fix this)")
            }
            Change::ConfigUnknown { topic } => write!(
                f,
                "? config  {topic}: broker cannot describe topic configs; not compared"
            ),
            Change::Unmanaged { topic } => {
                write!(
                    f,
                    "? unmanaged {topic}: on the cluster, not in the file (kept)"
                )
            }
            Change::Delete { topic } => write!(f, "- delete  {topic}"),
        }
    }
}

/// Prefix of the topics this file manages.
pub const MANAGED_PREFIX: &str = "tillstream.";

pub fn load(path: &Path) -> Result<TopologyFile, TopologyError> {
    let text = std::fs::read_to_string(path).map_err(|source| TopologyError::Io {
        path: path.display().to_string(),
        source,
    })?;
    let file: TopologyFile = toml::from_str(&text).map_err(|e| TopologyError::Parse {
        path: path.display().to_string(),
        message: e.message().to_string(),
    })?;
    validate(&file)?;
    Ok(file)
}

/// Structural checks that need no cluster.
pub fn validate(file: &TopologyFile) -> Result<(), TopologyError> {
    let mut problems = Vec::new();
    let mut names = BTreeSet::new();
    for t in &file.topics {
        if !names.insert(t.name.as_str()) {
            problems.push(format!("topic {} is listed twice", t.name));
        }
        if !t.name.starts_with(MANAGED_PREFIX) {
            problems.push(format!("topic {} must start with {MANAGED_PREFIX}", t.name));
        }
        if !["delete", "compact", "compact,delete"].contains(&t.cleanup_policy.as_str()) {
            problems.push(format!(
                "topic {}: cleanup_policy {:?} is not delete|compact|compact,delete",
                t.name, t.cleanup_policy
            ));
        }
        if t.cleanup_policy == "delete" && t.retention_ms.is_none() {
            problems.push(format!(
                "topic {}: a delete-policy topic needs retention_ms",
                t.name
            ));
        }
        for s in &t.value_subjects {
            if EventKind::from_full_name(s).is_none_or(|k| k.subject() != s) {
                problems.push(format!(
                    "topic {}: value subject {s} is not a shipped schema",
                    t.name
                ));
            }
        }
        if t.purpose.trim().is_empty() || t.owner.trim().is_empty() {
            problems.push(format!("topic {}: purpose and owner are required", t.name));
        }
    }
    for t in &file.topics {
        if let Some(other) = &t.copartition_with {
            match file.topics.iter().find(|o| &o.name == other) {
                None => problems.push(format!(
                    "topic {}: copartition_with {other} is not in the file",
                    t.name
                )),
                Some(o) => {
                    let (a, b) = (
                        t.partitions.unwrap_or(file.defaults.partitions),
                        o.partitions.unwrap_or(file.defaults.partitions),
                    );
                    if a != b {
                        problems.push(format!(
                            "topic {} has {a} partitions but must match {other} ({b})",
                            t.name
                        ));
                    }
                }
            }
        }
    }
    for g in &file.consumer_groups {
        for t in &g.topics {
            if !names.contains(t.as_str()) {
                problems.push(format!(
                    "consumer group {} reads {t}, which is not in the file",
                    g.name
                ));
            }
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(TopologyError::Invalid(problems.join("; ")))
    }
}

/// The topics as they should be under `profile`.
pub fn desired(file: &TopologyFile, profile: &str) -> Result<Vec<DesiredTopic>, TopologyError> {
    let p = file.profiles.get(profile).cloned().ok_or_else(|| {
        TopologyError::UnknownProfile(
            profile.into(),
            file.profiles.keys().cloned().collect::<Vec<_>>().join(", "),
        )
    })?;
    Ok(file
        .topics
        .iter()
        .map(|t| {
            let mut config = file.defaults.config.clone();
            config.extend(t.config.clone());
            config.insert("cleanup.policy".into(), t.cleanup_policy.clone());
            if let Some(r) = t.retention_ms {
                config.insert("retention.ms".into(), r.to_string());
            }
            for k in &p.drop_config {
                config.remove(k);
            }
            let mut rf = t
                .replication_factor
                .unwrap_or(file.defaults.replication_factor);
            if let Some(max) = p.max_replication_factor {
                rf = rf.min(max);
            }
            let mut partitions = t.partitions.unwrap_or(file.defaults.partitions);
            if let Some(max) = p.max_partitions {
                partitions = partitions.min(max);
            }
            DesiredTopic {
                name: t.name.clone(),
                partitions,
                replication_factor: rf,
                config,
            }
        })
        .collect())
}

/// The diff between the file and the cluster (pure).
pub fn plan(
    desired: &[DesiredTopic],
    live: &BTreeMap<String, LiveTopic>,
    allow_delete: bool,
) -> Vec<Change> {
    let mut changes = Vec::new();
    for d in desired {
        let Some(l) = live.get(&d.name) else {
            changes.push(Change::Create(d.clone()));
            continue;
        };
        if l.partitions < d.partitions {
            changes.push(Change::AddPartitions {
                topic: d.name.clone(),
                from: l.partitions,
                to: d.partitions,
            });
        } else if l.partitions > d.partitions {
            changes.push(Change::Drift {
                topic: d.name.clone(),
                what: format!(
                    "has {} partitions, file says {} (Kafka cannot shrink)",
                    l.partitions, d.partitions
                ),
            });
        }
        if l.replication_factor != d.replication_factor {
            changes.push(Change::Drift {
                topic: d.name.clone(),
                what: format!(
                    "replication factor {} != {}",
                    l.replication_factor, d.replication_factor
                ),
            });
        }
        match &l.config {
            None => changes.push(Change::ConfigUnknown {
                topic: d.name.clone(),
            }),
            Some(cfg) => {
                for (k, v) in &d.config {
                    if cfg.get(k) != Some(v) {
                        changes.push(Change::AlterConfig {
                            topic: d.name.clone(),
                            key: k.clone(),
                            from: cfg.get(k).cloned(),
                            to: v.clone(),
                        });
                    }
                }
            }
        }
    }
    let wanted: BTreeSet<&str> = desired.iter().map(|d| d.name.as_str()).collect();
    for name in live.keys() {
        if name.starts_with(MANAGED_PREFIX) && !wanted.contains(name.as_str()) {
            changes.push(if allow_delete {
                Change::Delete {
                    topic: name.clone(),
                }
            } else {
                Change::Unmanaged {
                    topic: name.clone(),
                }
            });
        }
    }
    changes
}

fn admin(config: &KafkaConfig) -> Result<AdminClient<DefaultClientContext>, TopologyError> {
    config
        .client_config("tillctl")
        .create()
        .map_err(|e| TopologyError::Unreachable {
            brokers: config.brokers.clone(),
            detail: e.to_string(),
        })
}

/// Reads topics, partition counts, replication factors and (where the broker supports it) the
/// configs this tool manages.
pub async fn live(
    config: &KafkaConfig,
    keys: &BTreeSet<String>,
    timeout: Duration,
) -> Result<BTreeMap<String, LiveTopic>, TopologyError> {
    let admin = admin(config)?;
    let metadata = {
        let admin_ref = &admin;
        tokio::task::block_in_place(|| admin_ref.inner().fetch_metadata(None, timeout))
    }
    .map_err(|e| TopologyError::Unreachable {
        brokers: config.brokers.clone(),
        detail: e.to_string(),
    })?;
    let mut out = BTreeMap::new();
    for t in metadata.topics() {
        if t.name().starts_with("__") {
            continue;
        }
        let rf = t
            .partitions()
            .iter()
            .map(|p| p.replicas().len() as i32)
            .max()
            .unwrap_or(0);
        out.insert(
            t.name().to_string(),
            LiveTopic {
                name: t.name().to_string(),
                partitions: t.partitions().len() as i32,
                replication_factor: rf,
                config: None,
            },
        );
    }
    let names: Vec<String> = out.keys().cloned().collect();
    let specs: Vec<ResourceSpecifier<'_>> =
        names.iter().map(|n| ResourceSpecifier::Topic(n)).collect();
    if specs.is_empty() {
        return Ok(out);
    }
    let opts = AdminOptions::new().request_timeout(Some(timeout));
    match admin.describe_configs(specs.iter(), &opts).await {
        Ok(results) => {
            for r in results.into_iter().flatten() {
                let rdkafka::admin::OwnedResourceSpecifier::Topic(name) = &r.specifier else {
                    continue;
                };
                let cfg: BTreeMap<String, String> = r
                    .entries
                    .iter()
                    .filter(|e| keys.contains(&e.name))
                    .filter_map(|e| e.value.clone().map(|v| (e.name.clone(), v)))
                    .collect();
                if let Some(t) = out.get_mut(name) {
                    t.config = Some(cfg);
                }
            }
        }
        Err(e) => tracing::warn!(error = %e, "broker cannot describe topic configs"),
    }
    Ok(out)
}

/// Applies the actionable changes; returns what was done.
pub async fn apply(
    config: &KafkaConfig,
    changes: &[Change],
    timeout: Duration,
) -> Result<Vec<String>, TopologyError> {
    let admin = admin(config)?;
    let opts = AdminOptions::new()
        .request_timeout(Some(timeout))
        .operation_timeout(Some(timeout));
    let mut done = Vec::new();
    let refused = |action: String, detail: String| {
        if detail.contains("UnsupportedFeature") || detail.contains("not supported by broker") {
            TopologyError::Unsupported { action }
        } else {
            TopologyError::Refused { action, detail }
        }
    };

    let creates: Vec<&DesiredTopic> = changes
        .iter()
        .filter_map(|c| match c {
            Change::Create(d) => Some(d),
            _ => None,
        })
        .collect();
    let new_topics: Vec<NewTopic<'_>> = creates
        .iter()
        .map(|d| {
            d.config.iter().fold(
                NewTopic::new(
                    &d.name,
                    d.partitions,
                    TopicReplication::Fixed(d.replication_factor),
                ),
                |t, (k, v)| t.set(k, v),
            )
        })
        .collect();
    if !new_topics.is_empty() {
        let results = admin
            .create_topics(new_topics.iter(), &opts)
            .await
            .map_err(|e| refused("create topics".into(), e.to_string()))?;
        for r in results {
            match r {
                Ok(name) => done.push(format!("created {name}")),
                Err((name, rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists)) => {
                    done.push(format!("{name} already existed"))
                }
                Err((name, code)) => {
                    return Err(refused(format!("create {name}"), code.to_string()));
                }
            }
        }
    }

    let parts: Vec<NewPartitions<'_>> = changes
        .iter()
        .filter_map(|c| match c {
            Change::AddPartitions { topic, to, .. } => {
                Some(NewPartitions::new(topic, *to as usize))
            }
            _ => None,
        })
        .collect();
    if !parts.is_empty() {
        let results = admin
            .create_partitions(parts.iter(), &opts)
            .await
            .map_err(|e| refused("add partitions".into(), e.to_string()))?;
        for r in results {
            match r {
                Ok(name) => done.push(format!("added partitions to {name}")),
                Err((name, code)) => {
                    return Err(refused(
                        format!("add partitions to {name}"),
                        code.to_string(),
                    ));
                }
            }
        }
    }

    // AlterConfigs replaces a topic's whole dynamic config: send every managed key of the topic.
    let mut alters: BTreeMap<&str, BTreeMap<&str, &str>> = BTreeMap::new();
    for c in changes {
        if let Change::AlterConfig { topic, key, to, .. } = c {
            alters.entry(topic).or_default().insert(key, to);
        }
    }
    if !alters.is_empty() {
        let specs: Vec<AlterConfig<'_>> = alters
            .iter()
            .map(|(topic, kv)| {
                kv.iter().fold(
                    AlterConfig::new(ResourceSpecifier::Topic(topic)),
                    |a, (k, v)| a.set(k, v),
                )
            })
            .collect();
        let results = admin
            .alter_configs(specs.iter(), &opts)
            .await
            .map_err(|e| refused("alter configs".into(), e.to_string()))?;
        for r in results {
            match r {
                Ok(spec) => done.push(format!("altered configs of {spec:?}")),
                Err((spec, code)) => {
                    return Err(refused(
                        format!("alter configs of {spec:?}"),
                        code.to_string(),
                    ));
                }
            }
        }
    }

    let deletes: Vec<&str> = changes
        .iter()
        .filter_map(|c| match c {
            Change::Delete { topic } => Some(topic.as_str()),
            _ => None,
        })
        .collect();
    if !deletes.is_empty() {
        let results = admin
            .delete_topics(&deletes, &opts)
            .await
            .map_err(|e| refused("delete topics".into(), e.to_string()))?;
        for r in results {
            match r {
                Ok(name) => done.push(format!("deleted {name}")),
                Err((name, code)) => {
                    return Err(refused(format!("delete {name}"), code.to_string()));
                }
            }
        }
    }
    Ok(done)
}

/// Every config key the file manages (so unrelated broker defaults never show up as drift).
pub fn managed_keys(desired: &[DesiredTopic]) -> BTreeSet<String> {
    desired
        .iter()
        .flat_map(|d| d.config.keys().cloned())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file() -> TopologyFile {
        load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../../topology/topology.toml")).unwrap()
    }

    #[test]
    fn shipped_topology_is_valid_and_profiles_apply() {
        let f = file();
        let local = desired(&f, "local").unwrap();
        assert!(local.iter().all(|t| t.replication_factor == 1));
        assert!(
            local
                .iter()
                .all(|t| !t.config.contains_key("min.insync.replicas"))
        );
        let prod = desired(&f, "production").unwrap();
        assert!(prod.iter().all(|t| t.replication_factor == 3));
        let raw = prod
            .iter()
            .find(|t| t.name == "tillstream.store-events.raw")
            .unwrap();
        assert_eq!(raw.config["cleanup.policy"], "delete");
        assert_eq!(raw.config["retention.ms"], "1209600000");
        assert!(matches!(
            desired(&f, "nope"),
            Err(TopologyError::UnknownProfile(..))
        ));
    }

    #[test]
    fn empty_cluster_plans_every_topic() {
        let d = desired(&file(), "local").unwrap();
        let changes = plan(&d, &BTreeMap::new(), false);
        assert_eq!(changes.len(), d.len());
        assert!(changes.iter().all(|c| matches!(c, Change::Create(_))));
    }

    #[test]
    fn matching_cluster_plans_nothing_and_drift_is_reported() {
        let d = desired(&file(), "local").unwrap();
        let mut live: BTreeMap<String, LiveTopic> = d
            .iter()
            .map(|t| {
                (
                    t.name.clone(),
                    LiveTopic {
                        name: t.name.clone(),
                        partitions: t.partitions,
                        replication_factor: t.replication_factor,
                        config: Some(t.config.clone()),
                    },
                )
            })
            .collect();
        assert!(plan(&d, &live, false).is_empty());

        let raw = live.get_mut("tillstream.store-events.raw").unwrap();
        raw.partitions = 4;
        raw.config
            .as_mut()
            .unwrap()
            .insert("retention.ms".into(), "1".into());
        live.insert(
            "tillstream.old".into(),
            LiveTopic {
                name: "tillstream.old".into(),
                partitions: 1,
                replication_factor: 1,
                config: None,
            },
        );
        live.insert(
            "someone.else".into(),
            LiveTopic {
                name: "someone.else".into(),
                partitions: 1,
                replication_factor: 1,
                config: None,
            },
        );
        let changes = plan(&d, &live, false);
        assert!(changes.contains(&Change::AddPartitions {
            topic: "tillstream.store-events.raw".into(),
            from: 4,
            to: 12
        }));
        assert!(changes.iter().any(|c| matches!(c, Change::AlterConfig { key, from: Some(f), .. } if key == "retention.ms" && f == "1")));
        assert!(changes.contains(&Change::Unmanaged {
            topic: "tillstream.old".into()
        }));
        assert!(
            !changes
                .iter()
                .any(|c| format!("{c}").contains("someone.else"))
        );
        let with_delete = plan(&d, &live, true);
        assert!(with_delete.contains(&Change::Delete {
            topic: "tillstream.old".into()
        }));
    }

    #[test]
    fn validation_catches_mistakes() {
        let mut f = file();
        f.topics[0]
            .value_subjects
            .push("com.example.Unknown".into());
        f.topics.push(f.topics[1].clone());
        let last = f.topics.len() - 1;
        f.topics[last].cleanup_policy = "forever".into();
        let changelog = f
            .topics
            .iter_mut()
            .find(|t| t.copartition_with.is_some())
            .unwrap();
        changelog.partitions = Some(3);
        let err = validate(&f).unwrap_err().to_string();
        assert!(err.contains("com.example.Unknown"), "{err}");
        assert!(err.contains("listed twice"), "{err}");
        assert!(err.contains("forever"), "{err}");
        assert!(err.contains("must match"), "{err}");
    }
}
