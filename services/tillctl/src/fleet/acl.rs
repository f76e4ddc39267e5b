//! The devices' part of the broker's ACL, from the fleet file: each device writes only its own
//! device level of its own store (`store/<store>/<device>/#`, contract v2) and reads only its
//! store's catalog. The rest of the file (services, `%u` patterns for heartbeats and receipts) is
//! the operator's and is kept as it is above [`DEVICES_MARKER`]. Pure rendering; the file edit is
//! [`super::write_acl`].

use tillstream_store_bridge::fleet::Fleet;

/// The line above which the ACL file is left alone; everything below it is rewritten.
pub const DEVICES_MARKER: &str =
    "# --- devices: written by `tillctl fleet` from the fleet file; edits below are replaced ---";

/// Which topics a device's block grants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TopicLevels {
    /// Contract v2: its own device level only.
    Device,
    /// Migration: also its own store's v1 store-level topics (no device level there, so any
    /// device of the store may write them; the bridge checks the payload against the fleet).
    DeviceAndStore,
}

/// The v1 store-level topic trees a device may write during a migration.
const STORE_LEVEL_TREES: [&str; 4] = ["pos", "inventory", "loyalty", "day"];

/// `head` (the file's fixed part, without the marker) followed by the marker and one block per
/// device of `fleet`, in device order (the same fleet always renders the same file).
pub fn render(head: &str, fleet: &Fleet, levels: TopicLevels) -> String {
    let mut devices: Vec<(&str, &str)> = fleet.devices().collect();
    devices.sort();
    let mut s = head.trim_end().to_string();
    s.push_str("\n\n");
    s.push_str(DEVICES_MARKER);
    s.push('\n');
    for (device, store) in devices {
        s.push_str(&format!(
            "\nuser {device}\ntopic write store/{store}/{device}/#\n"
        ));
        if levels == TopicLevels::DeviceAndStore {
            for tree in STORE_LEVEL_TREES {
                s.push_str(&format!("topic write store/{store}/{tree}/#\n"));
            }
        }
        s.push_str(&format!("topic read store/{store}/catalog/#\n"));
    }
    s
}

/// The fixed part of an ACL file: everything above the marker (all of it when there is none yet).
pub fn head(text: &str) -> &str {
    match text.find(DEVICES_MARKER) {
        Some(i) => &text[..i],
        None => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_device_blocks_replace_the_old_ones_and_keep_the_head() {
        let head_text = "pattern write fleet/%u/#\nuser bridge\ntopic read store/+/#\n";
        let fleet = Fleet::parse("s002-d01,s002\ns001-d01,s001\n").unwrap();
        let first = render(head_text, &fleet, TopicLevels::Device);
        assert!(first.starts_with(head_text));
        let d1 = first.find("user s001-d01").unwrap();
        assert!(d1 < first.find("user s002-d01").unwrap(), "sorted");
        assert!(first.contains("topic write store/s001/s001-d01/#\n"));
        assert!(first.contains("topic read store/s002/catalog/#\n"));
        // Rendered again from its own head with one device fewer: the head is kept once, the
        // removed device is gone.
        let fewer = Fleet::parse("s001-d01,s001\n").unwrap();
        let second = render(head(&first), &fewer, TopicLevels::Device);
        assert_eq!(second.matches(DEVICES_MARKER).count(), 1);
        assert_eq!(second.matches("user bridge").count(), 1);
        assert!(!second.contains("s002-d01"));
        assert_eq!(
            render(head(&second), &fewer, TopicLevels::Device),
            second,
            "idempotent"
        );
        assert!(!second.contains("store/s001/pos/#"));
    }

    #[test]
    fn a_migration_grants_each_device_its_own_stores_v1_topics_only() {
        let fleet = Fleet::parse("s001-d01,s001\ns002-d01,s002\n").unwrap();
        let acl = render("", &fleet, TopicLevels::DeviceAndStore);
        let block = |device: &str| {
            let start = acl.find(&format!("user {device}\n")).unwrap();
            let end = acl[start + 1..]
                .find("\nuser ")
                .map_or(acl.len(), |i| start + 1 + i);
            acl[start..end].to_string()
        };
        let d1 = block("s001-d01");
        for tree in STORE_LEVEL_TREES {
            assert!(
                d1.contains(&format!("topic write store/s001/{tree}/#")),
                "{d1}"
            );
        }
        assert!(!d1.contains("store/s002"), "another store's topics: {d1}");
        assert!(!acl.contains("pattern"), "no grant for every user");
    }
}
