//! Deterministic identities: the same input always names the same record, which is what lets every
//! sink be idempotent on it (a replay or a retry re-creates the same id, never a new one).

/// A deterministic UUIDv5 (OID namespace) of `name`.
pub fn uuid_v5(name: &str) -> String {
    uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_OID, name.as_bytes()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuid_v5_is_deterministic() {
        assert_eq!(uuid_v5("a"), uuid_v5("a"));
        assert_ne!(uuid_v5("a"), uuid_v5("b"));
    }
}
