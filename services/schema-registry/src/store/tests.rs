//! Unit tests of the registry rules, without HTTP.

use super::*;
use crate::error::codes;

fn rec(name: &str, fields: &str) -> SchemaInput {
    SchemaInput::avro(format!(
        r#"{{"type":"record","name":"{name}","namespace":"t","fields":[{fields}]}}"#
    ))
}

const A: &str = r#"{"name":"a","type":"string"}"#;
const A_INT: &str = r#"{"name":"a","type":"int"}"#;
const B_DEF: &str = r#"{"name":"b","type":"int","default":0}"#;
const B_DEF7: &str = r#"{"name":"b","type":"int","default":7}"#;
const B: &str = r#"{"name":"b","type":"int"}"#;

fn code<T: std::fmt::Debug>(r: Result<T, RegistryError>) -> u32 {
    r.expect_err("expected an error").code()
}

#[test]
fn identical_schema_is_deduplicated() {
    let mut r = Registry::in_memory(Level::Backward);
    let v1 = rec("S", A);
    let id = r.register("s", &v1).unwrap();
    assert_eq!(id, 1);
    assert_eq!(r.register("s", &v1).unwrap(), id);
    // Same JSON, different whitespace and key order.
    let spaced = SchemaInput::avro(
        r#"{ "fields": [ {"type":"string","name":"a"} ], "namespace":"t", "name":"S", "type":"record" }"#,
    );
    assert_eq!(r.register("s", &spaced).unwrap(), id);
    assert_eq!(r.versions("s", false).unwrap(), vec![1]);
    // The text first registered is what is served.
    assert_eq!(r.schema_by_id(id).unwrap().schema, v1.schema);
}

#[test]
fn same_schema_in_another_subject_reuses_the_id() {
    let mut r = Registry::in_memory(Level::Backward);
    let id = r.register("s1", &rec("S", A)).unwrap();
    assert_eq!(r.register("s2", &rec("S", A)).unwrap(), id);
    assert_eq!(r.versions("s2", false).unwrap(), vec![1]);
    let users = r.id_versions(id, false).unwrap();
    assert_eq!(
        users,
        vec![
            SubjectVersionRef {
                subject: "s1".into(),
                version: 1
            },
            SubjectVersionRef {
                subject: "s2".into(),
                version: 1
            }
        ]
    );
    assert_eq!(r.schema_count(), 1);
    assert_eq!(r.subject_count(), 2);
}

#[test]
fn a_changed_default_is_a_different_schema() {
    let with0 = rec("S", &format!("{A},{B_DEF}"));
    let with7 = rec("S", &format!("{A},{B_DEF7}"));
    // Parsing Canonical Form cannot tell them apart...
    let c0 = Schema::parse_str(&with0.schema).unwrap().canonical_form();
    let c7 = Schema::parse_str(&with7.schema).unwrap().canonical_form();
    assert_eq!(c0, c7);
    // ...the registry does.
    let mut r = Registry::in_memory(Level::Backward);
    let id0 = r.register("s", &with0).unwrap();
    let id7 = r.register("s", &with7).unwrap();
    assert_ne!(id0, id7);
    assert_eq!(r.versions("s", false).unwrap(), vec![1, 2]);
    assert_eq!(r.lookup("s", &with7, false).unwrap().version, 2);
}

/// For each level: (v1, v2...) history, a compatible candidate and an incompatible one.
#[test]
fn every_level_accepts_compatible_and_rejects_incompatible() {
    struct Case {
        level: Level,
        history: Vec<SchemaInput>,
        good: SchemaInput,
        bad: SchemaInput,
    }
    let ab = |b: &str| rec("S", &format!("{A},{b}"));
    let cases = vec![
        Case {
            level: Level::None,
            history: vec![rec("S", A)],
            good: rec("S", A_INT),
            bad: SchemaInput::avro("{not avro"), // only invalid schemas fail under NONE
        },
        Case {
            level: Level::Backward,
            history: vec![rec("S", A)],
            good: ab(B_DEF),
            bad: ab(B),
        },
        Case {
            level: Level::Forward,
            history: vec![ab(B)],
            good: ab(B_DEF),
            bad: rec("S", A),
        },
        Case {
            level: Level::Full,
            history: vec![rec("S", A)],
            good: ab(B_DEF),
            bad: ab(B),
        },
        Case {
            level: Level::BackwardTransitive,
            history: vec![rec("S", A), ab(B_DEF)],
            good: ab(B_DEF7),
            bad: ab(B), // fine against v2, not against v1
        },
        Case {
            level: Level::ForwardTransitive,
            history: vec![ab(B), ab(B_DEF)],
            good: ab(B_DEF7),
            bad: rec("S", A), // v2 can read it, v1 cannot
        },
        Case {
            level: Level::FullTransitive,
            history: vec![rec("S", A), ab(B_DEF)],
            good: ab(B_DEF7),
            bad: ab(B),
        },
    ];
    for case in cases {
        let mut r = Registry::in_memory(Level::None);
        for h in &case.history {
            r.register("s", h).unwrap();
        }
        r.set_subject_level("s", case.level).unwrap();
        let bad_check = r.check_compatibility("s", &case.bad, None);
        if case.level == Level::None {
            assert_eq!(code(bad_check), codes::INVALID_SCHEMA);
        } else {
            let res = bad_check.unwrap();
            assert!(!res.is_compatible, "{:?}", case.level);
            assert!(!res.messages.is_empty());
            let err = r.register("s", &case.bad).unwrap_err();
            assert_eq!(err.code(), codes::INCOMPATIBLE_SCHEMA, "{:?}", case.level);
            assert_eq!(err.http_status(), 409);
        }
        assert!(
            r.check_compatibility("s", &case.good, None)
                .unwrap()
                .is_compatible,
            "{:?}",
            case.level
        );
        r.register("s", &case.good)
            .unwrap_or_else(|e| panic!("{:?}: {e}", case.level));
    }
}

#[test]
fn transitive_difference_is_only_in_the_versions_checked() {
    let mut r = Registry::in_memory(Level::Backward);
    r.register("s", &rec("S", A)).unwrap();
    r.register("s", &rec("S", &format!("{A},{B_DEF}"))).unwrap();
    let v3 = rec("S", &format!("{A},{B}"));
    // Non-transitive: only v2 matters.
    assert!(r.check_compatibility("s", &v3, None).unwrap().is_compatible);
    // Explicit versions.
    assert!(
        !r.check_compatibility("s", &v3, Some(VersionSel::Number(1)))
            .unwrap()
            .is_compatible
    );
    assert!(
        r.check_compatibility("s", &v3, Some(VersionSel::Latest))
            .unwrap()
            .is_compatible
    );
    r.set_subject_level("s", Level::BackwardTransitive).unwrap();
    assert!(!r.check_compatibility("s", &v3, None).unwrap().is_compatible);
}

#[test]
fn compatibility_of_unknown_subjects() {
    let r = Registry::in_memory(Level::Full);
    let s = rec("S", A);
    assert!(
        r.check_compatibility("nobody", &s, None)
            .unwrap()
            .is_compatible
    );
    assert!(
        r.check_compatibility("nobody", &s, Some(VersionSel::Latest))
            .unwrap()
            .is_compatible
    );
    assert_eq!(
        code(r.check_compatibility("nobody", &s, Some(VersionSel::Number(1)))),
        codes::SUBJECT_NOT_FOUND
    );
}

#[test]
fn ids_are_never_reused() {
    let mut r = Registry::in_memory(Level::None);
    let a = r.register("s", &rec("S", A)).unwrap();
    let b = r.register("s", &rec("S", A_INT)).unwrap();
    assert_eq!((a, b), (1, 2));
    r.delete_subject("s", false).unwrap();
    r.delete_subject("s", true).unwrap();
    assert!(r.subjects(true).is_empty());
    // The schema record survives the hard delete: same text, same id.
    assert_eq!(r.schema_by_id(b).unwrap().schema, rec("S", A_INT).schema);
    assert_eq!(r.register("t", &rec("S", A_INT)).unwrap(), b);
    let c = r.register("t", &rec("T", A)).unwrap();
    assert_eq!(c, 3);
    // Versions restart after a hard delete of the whole subject.
    assert_eq!(r.register("s", &rec("S", A)).unwrap(), a);
    assert_eq!(r.versions("s", false).unwrap(), vec![1]);
}

#[test]
fn persistence_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b);
    {
        let mut r = Registry::open(dir.path(), Level::Backward).unwrap();
        a = r.register("s", &rec("S", A)).unwrap();
        b = r.register("s", &rec("S", &format!("{A},{B_DEF}"))).unwrap();
        r.register("other", &rec("S", A)).unwrap();
        r.set_subject_level("s", Level::Full).unwrap();
        r.set_global_level(Level::Forward).unwrap();
        r.delete_version("other", VersionSel::Number(1), false)
            .unwrap();
    }
    let mut r = Registry::open(dir.path(), Level::Backward).unwrap();
    assert_eq!(r.subjects(false), vec!["s".to_string()]);
    assert_eq!(r.subjects(true), vec!["other".to_string(), "s".to_string()]);
    assert_eq!(r.versions("s", false).unwrap(), vec![1, 2]);
    assert_eq!(r.version("s", VersionSel::Number(1), false).unwrap().id, a);
    assert_eq!(r.version("s", VersionSel::Latest, false).unwrap().id, b);
    assert_eq!(r.subject_level("s"), Some(Level::Full));
    assert_eq!(r.global_level(), Level::Forward);
    assert_eq!(r.versions("other", true).unwrap(), vec![1]);
    assert_eq!(code(r.versions("other", false)), codes::SUBJECT_NOT_FOUND);
    // The id counter continues after the reload.
    let c = r
        .register(
            "s",
            &rec(
                "S",
                &format!("{A},{B_DEF},{}", r#"{"name":"c","type":"int","default":1}"#),
            ),
        )
        .unwrap();
    assert_eq!(c, b + 1);
    drop(r);
    let r = Registry::open(dir.path(), Level::Backward).unwrap();
    assert_eq!(r.version("s", VersionSel::Latest, false).unwrap().id, c);
    assert_eq!(r.schema_count(), 3);
}

#[test]
fn configs() {
    let mut r = Registry::in_memory(Level::Backward);
    assert_eq!(r.global_level(), Level::Backward);
    assert_eq!(
        code(r.subject_config("s", false)),
        codes::SUBJECT_LEVEL_NOT_CONFIGURED
    );
    assert_eq!(r.subject_config("s", true).unwrap(), Level::Backward);
    r.set_subject_level("s", Level::None).unwrap();
    assert_eq!(r.subject_config("s", false).unwrap(), Level::None);
    assert_eq!(r.level_for("s"), Level::None);
    assert_eq!(r.delete_subject_level("s").unwrap(), Level::None);
    assert_eq!(r.level_for("s"), Level::Backward);
    assert_eq!(code(r.delete_subject_level("s")), codes::SUBJECT_NOT_FOUND);
    r.set_global_level(Level::FullTransitive).unwrap();
    assert_eq!(r.level_for("s"), Level::FullTransitive);
    assert_eq!(r.reset_global_level().unwrap(), Level::FullTransitive);
    assert_eq!(r.global_level(), Level::Backward);
}

#[test]
fn deletes() {
    let mut r = Registry::in_memory(Level::Backward);
    let v1 = rec("S", A);
    let id = r.register("s", &v1).unwrap();
    r.register("s", &rec("S", &format!("{A},{B_DEF}"))).unwrap();
    // Hard delete needs a soft delete first.
    assert_eq!(
        code(r.delete_subject("s", true)),
        codes::SUBJECT_NOT_SOFT_DELETED
    );
    assert_eq!(
        code(r.delete_version("s", VersionSel::Number(1), true)),
        codes::VERSION_NOT_SOFT_DELETED
    );
    assert_eq!(
        r.delete_version("s", VersionSel::Number(1), false).unwrap(),
        1
    );
    assert_eq!(
        code(r.delete_version("s", VersionSel::Number(1), false)),
        codes::VERSION_SOFT_DELETED
    );
    assert_eq!(
        code(r.version("s", VersionSel::Number(1), false)),
        codes::VERSION_NOT_FOUND
    );
    assert_eq!(r.version("s", VersionSel::Number(1), true).unwrap().id, id);
    assert_eq!(code(r.lookup("s", &v1, false)), codes::SCHEMA_NOT_FOUND);
    assert_eq!(r.lookup("s", &v1, true).unwrap().version, 1);
    assert_eq!(
        r.delete_version("s", VersionSel::Number(1), true).unwrap(),
        1
    );
    assert_eq!(
        code(r.version("s", VersionSel::Number(1), true)),
        codes::VERSION_NOT_FOUND
    );
    assert_eq!(r.delete_subject("s", false).unwrap(), vec![2]);
    assert_eq!(
        code(r.delete_subject("s", false)),
        codes::SUBJECT_SOFT_DELETED
    );
    assert_eq!(code(r.versions("s", false)), codes::SUBJECT_NOT_FOUND);
    // Registering again after a soft delete continues the numbering and keeps the id.
    assert_eq!(r.register("s", &v1).unwrap(), id);
    assert_eq!(r.versions("s", false).unwrap(), vec![3]);
    assert_eq!(r.versions("s", true).unwrap(), vec![2, 3]);
    assert_eq!(
        code(r.delete_subject("nobody", false)),
        codes::SUBJECT_NOT_FOUND
    );
    assert_eq!(
        code(r.delete_version("s", VersionSel::Number(99), false)),
        codes::VERSION_NOT_FOUND
    );
}

#[test]
fn invalid_input_is_rejected_not_panicked_on() {
    let mut r = Registry::in_memory(Level::Backward);
    for bad in [
        "",
        "{",
        "nope",
        r#"{"type":"record","name":"X"}"#,
        r#"{"type":"what"}"#,
    ] {
        assert_eq!(
            code(r.register("s", &SchemaInput::avro(bad))),
            codes::INVALID_SCHEMA,
            "{bad}"
        );
    }
    assert!(r.subjects(true).is_empty());
    assert_eq!(
        code(r.register("a\u{0}b", &rec("S", A))),
        codes::INVALID_SUBJECT
    );
    assert_eq!(code("0".parse::<VersionSel>()), codes::INVALID_VERSION);
    assert_eq!(code("abc".parse::<VersionSel>()), codes::INVALID_VERSION);
    assert_eq!(
        code("2147483648".parse::<VersionSel>()),
        codes::INVALID_VERSION
    );
    assert_eq!("latest".parse::<VersionSel>().unwrap(), VersionSel::Latest);
    assert_eq!("-1".parse::<VersionSel>().unwrap(), VersionSel::Latest);
    assert_eq!("7".parse::<VersionSel>().unwrap(), VersionSel::Number(7));
    assert_eq!(code(r.schema_by_id(42)), codes::SCHEMA_NOT_FOUND);
    assert_eq!(code(r.id_versions(42, false)), codes::SCHEMA_NOT_FOUND);
    assert_eq!(
        code(r.lookup("nobody", &rec("S", A), false)),
        codes::SUBJECT_NOT_FOUND
    );
}

#[test]
fn references() {
    let mut r = Registry::in_memory(Level::Backward);
    let addr = SchemaInput::avro(
        r#"{"type":"record","name":"Address","namespace":"t","fields":[{"name":"street","type":"string"}]}"#,
    );
    let addr_id = r.register("addr", &addr).unwrap();
    let customer = SchemaInput {
        schema: r#"{"type":"record","name":"Customer","namespace":"t","fields":[{"name":"home","type":"t.Address"}]}"#.into(),
        schema_type: SchemaType::Avro,
        references: vec![Reference {
            name: "t.Address".into(),
            subject: "addr".into(),
            version: 1,
        }],
    };
    let cust_id = r.register("cust", &customer).unwrap();
    assert_ne!(cust_id, addr_id);
    assert_eq!(r.register("cust", &customer).unwrap(), cust_id);
    assert_eq!(
        r.schema_by_id(cust_id).unwrap().references,
        customer.references
    );
    assert_eq!(
        r.referenced_by("addr", VersionSel::Latest).unwrap(),
        vec![cust_id]
    );
    assert_eq!(
        code(r.delete_subject("addr", false)),
        codes::REFERENCE_EXISTS
    );
    // Without the reference the type is unknown.
    let unresolved = SchemaInput::avro(customer.schema.clone());
    assert_eq!(code(r.register("x", &unresolved)), codes::INVALID_SCHEMA);
    let dangling = SchemaInput {
        references: vec![Reference {
            name: "t.Address".into(),
            subject: "addr".into(),
            version: 9,
        }],
        ..customer.clone()
    };
    assert_eq!(code(r.register("x", &dangling)), codes::INVALID_SCHEMA);
}
