//! The devices' part of the broker's ACL, from the fleet file: each device writes only its own
//! device level of its own store (`store/<store>/<device>/#`, contract v2) and reads only its
//! store's catalog. The rest of the file (services, `%u` patterns for heartbeats and receipts) is
//! the operator's and is kept as it is above [`DEVICES_MARKER`]. Pure rendering; the file edit is
//! [`super::write_acl`].

use tillstream_store_bridge::fleet::Fleet;

/// The line above which the ACL file is left alone; everything below it is rewritten.
pub const DEVICES_MARKER: &str =
    "# --- devices: written by `tillctl fleet` from the fleet file; edits below are replaced ---";

/// `head` (the file's fixed part, without the marker) followed by the marker and one block per
/// device of `fleet`, in device order (the same fleet always renders the same file).
pub fn render(head: &str, fleet: &Fleet) -> String {
    let mut devices: Vec<(&str, &str)> = fleet.devices().collect();
    devices.sort();
    let mut s = head.trim_end().to_string();
    s.push_str("\n\n");
    s.push_str(DEVICES_MARKER);
    s.push('\n');
    for (device, store) in devices {
        s.push_str(&format!(
            "\nuser {device}\ntopic write store/{store}/{device}/#\ntopic read store/{store}/catalog/#\n"
        ));
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
        let first = render(head_text, &fleet);
        assert!(first.starts_with(head_text));
        let d1 = first.find("user s001-d01").unwrap();
        assert!(d1 < first.find("user s002-d01").unwrap(), "sorted");
        assert!(first.contains("topic write store/s001/s001-d01/#\n"));
        assert!(first.contains("topic read store/s002/catalog/#\n"));
        // Rendered again from its own head with one device fewer: the head is kept once, the
        // removed device is gone.
        let fewer = Fleet::parse("s001-d01,s001\n").unwrap();
        let second = render(head(&first), &fewer);
        assert_eq!(second.matches(DEVICES_MARKER).count(), 1);
        assert_eq!(second.matches("user bridge").count(), 1);
        assert!(!second.contains("s002-d01"));
        assert_eq!(render(head(&second), &fewer), second, "idempotent");
    }
}
