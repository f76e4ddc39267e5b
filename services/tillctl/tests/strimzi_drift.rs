//! The checked-in Strimzi topics (`k8s/strimzi/topics.yaml`) are exactly what `tillctl topology
//! render --format strimzi` makes of `topology/topology.toml`: a change to the topology without
//! re-rendering (or a hand edit of the YAML) fails here. Regenerate with
//! `tillctl topology render --format strimzi > k8s/strimzi/topics.yaml`.

use std::path::{Path, PathBuf};
use std::process::Command;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn render(topology: &Path) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_tillctl"))
        .args(["topology", "render", "--format", "strimzi", "--file"])
        .arg(topology)
        .output()
        .expect("tillctl runs");
    assert!(
        out.status.success(),
        "render failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8")
}

#[test]
fn checked_in_strimzi_topics_match_the_topology() {
    let rendered = render(&repo().join("topology/topology.toml"));
    let path = repo().join("k8s/strimzi/topics.yaml");
    let checked_in = std::fs::read_to_string(&path).expect("k8s/strimzi/topics.yaml exists");
    if rendered != checked_in {
        let first = rendered
            .lines()
            .zip(checked_in.lines())
            .position(|(a, b)| a != b)
            .map(|i| i + 1)
            .unwrap_or_else(|| rendered.lines().count().min(checked_in.lines().count()) + 1);
        panic!(
            "k8s/strimzi/topics.yaml differs from the topology (first at line {first}); regenerate: \
             tillctl topology render --format strimzi > k8s/strimzi/topics.yaml"
        );
    }
    let topics = std::fs::read_to_string(repo().join("topology/topology.toml"))
        .unwrap()
        .matches("[[topics]]")
        .count();
    assert_eq!(checked_in.matches("kind: KafkaTopic").count(), topics);
}

/// The comparison sees a change of the topology: a copy with one topic's partitions changed
/// renders differently from the checked-in file.
#[test]
fn a_changed_topology_renders_differently() {
    let original = std::fs::read_to_string(repo().join("topology/topology.toml")).unwrap();
    let changed = original.replacen("partitions = 12", "partitions = 24", 1);
    assert_ne!(
        original, changed,
        "the topology has a default partition count to change"
    );
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("topology.toml");
    std::fs::write(&copy, changed).unwrap();
    let checked_in = std::fs::read_to_string(repo().join("k8s/strimzi/topics.yaml")).unwrap();
    assert_ne!(render(&copy), checked_in);
}
