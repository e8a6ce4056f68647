//! The manifest: strict parsing, field paths in errors, `to_toml`, the operator's policy.

use plugboard_package::{
    Capabilities, InstallPolicy, Manifest, PackageError, PackageLimits, PolicyViolation,
};

use crate::{MANIFEST, SMALL};

fn parse_err(text: &str) -> PackageError {
    Manifest::parse(text).expect_err("the manifest should be refused")
}

#[test]
fn the_full_manifest_parses() {
    let m = Manifest::parse(MANIFEST).unwrap();
    assert_eq!(m.package.name, "audit");
    assert_eq!(m.package.version.to_string(), "1.2.0");
    assert_eq!(m.package.contract.to_string(), "^0.2");
    assert_eq!(m.hooks.len(), 1);
    let h = &m.hooks[0];
    assert_eq!(h.event, "on_user_after_save_failure");
    assert_eq!(h.priority.get(), 100);
    assert_eq!(h.depends, ["validator"]);
    assert_eq!(m.dependencies["validator"].to_string(), "^1.0");
    assert_eq!(m.limits.memory_mib, Some(64));
    assert_eq!(
        m.capabilities,
        Capabilities {
            log: true,
            settings: true,
            clock: true,
            ..Capabilities::default()
        }
    );
    // Defaults: the plugin is named after the package, soft, no limits or capabilities.
    let m = Manifest::parse(SMALL).unwrap();
    assert_eq!(m.hooks[0].plugin, "audit");
    assert_eq!(m.hooks[0].depend_type, plugboard_core::DependType::Soft);
    assert_eq!(m.limits, PackageLimits::default());
    assert_eq!(m.capabilities, Capabilities::default());
}

#[test]
fn to_toml_reads_back_equal() {
    for text in [MANIFEST, SMALL] {
        let m = Manifest::parse(text).unwrap();
        let again = Manifest::parse(&m.to_toml()).unwrap();
        assert_eq!(again, m, "{}", m.to_toml());
    }
}

#[test]
fn an_unknown_field_is_named_with_its_line() {
    let text = MANIFEST.replace("license = \"MIT\"", "license = \"MIT\"\nhomepage = \"x\"");
    let e = parse_err(&text);
    assert!(matches!(e, PackageError::ManifestSyntax { .. }), "{e:?}");
    let msg = e.to_string();
    assert!(msg.contains("unknown field `homepage`"), "{msg}");
    assert!(msg.contains("line 7"), "{msg}");
    let e = parse_err(&MANIFEST.replace("[capabilities]", "[capabilities]\nnetwork = true"));
    assert!(e.to_string().contains("unknown field `network`"), "{e}");
    let e = parse_err(&format!("{SMALL}\n[sandbox]\nx = 1\n"));
    assert!(e.to_string().contains("unknown field `sandbox`"), "{e}");
}

#[test]
fn a_bad_semver_names_the_field() {
    let e = parse_err(&SMALL.replace("version = \"1.2.0\"", "version = \"one\""));
    assert!(
        matches!(&e, PackageError::ManifestInvalid { field, line: Some(3), .. } if field == "package.version"),
        "{e:?}"
    );
    assert!(
        e.to_string()
            .starts_with("plugboard.toml line 3: package.version: `one` is not a semver version"),
        "{e}"
    );
    let e = parse_err(&SMALL.replace("contract = \"0.2\"", "contract = \"zero\""));
    assert!(
        matches!(&e, PackageError::ManifestInvalid { field, .. } if field == "package.contract"),
        "{e:?}"
    );
    let e = parse_err(&MANIFEST.replace("validator = \"^1.0\"", "validator = \"^^1\""));
    assert!(
        matches!(&e, PackageError::ManifestInvalid { field, .. } if field == "dependencies.validator"),
        "{e:?}"
    );
}

#[test]
fn a_bad_priority_names_the_hook() {
    let text =
        format!("{SMALL}\n[[hooks]]\nevent = \"on_other\"\npriority = 150\nplugin = \"audit2\"\n");
    let e = parse_err(&text);
    assert!(
        matches!(&e, PackageError::ManifestInvalid { field, line: Some(13), .. } if field == "hooks[1].priority"),
        "{e:?}"
    );
    assert_eq!(
        e.to_string(),
        "plugboard.toml line 13: hooks[1].priority: 150 is out of range: it must be between 0 and 100"
    );
    let e = parse_err(&SMALL.replace("priority = 10", "priority = -1"));
    assert!(
        matches!(&e, PackageError::ManifestInvalid { field, .. } if field == "hooks[0].priority"),
        "{e:?}"
    );
    let e = parse_err(&SMALL.replace("priority = 10", "priority = \"high\""));
    assert!(matches!(e, PackageError::ManifestSyntax { .. }), "{e:?}");
}

#[test]
fn bad_names_are_named() {
    for bad in ["Audit", "a", "9lives", "audit!", &"a".repeat(51)] {
        let e = parse_err(&SMALL.replace("name = \"audit\"", &format!("name = \"{bad}\"")));
        assert!(
            matches!(&e, PackageError::ManifestInvalid { field, line: Some(2), .. } if field == "package.name"),
            "{bad}: {e:?}"
        );
    }
    let e = parse_err(&SMALL.replace("on_user_after_save_failure", "on user save"));
    assert!(
        matches!(&e, PackageError::ManifestInvalid { field, .. } if field == "hooks[0].event"),
        "{e:?}"
    );
    let e = parse_err(&format!("{SMALL}depends = [\"bad name\"]\n"));
    assert!(
        matches!(&e, PackageError::ManifestInvalid { field, .. } if field == "hooks[0].depends[0]"),
        "{e:?}"
    );
}

#[test]
fn other_semantic_errors() {
    // No hooks.
    let e = parse_err(&SMALL[..SMALL.find("[[hooks]]").unwrap()]);
    assert!(
        matches!(&e, PackageError::ManifestInvalid { field, .. } if field == "hooks"),
        "{e:?}"
    );
    // Two hooks registering the same plugin.
    let e = parse_err(&format!(
        "{SMALL}\n[[hooks]]\nevent = \"on_other\"\npriority = 1\n"
    ));
    assert!(
        matches!(&e, PackageError::ManifestInvalid { field, .. } if field == "hooks[1].plugin"),
        "{e:?}"
    );
    // An empty licence, a readme under another name, a zero limit, a bad depend_type.
    let e = parse_err(&SMALL.replace("license = \"MIT\"", "license = \" \""));
    assert!(
        matches!(&e, PackageError::ManifestInvalid { field, .. } if field == "package.license"),
        "{e:?}"
    );
    let e = parse_err(&SMALL.replace(
        "license = \"MIT\"",
        "license = \"MIT\"\nreadme = \"docs.md\"",
    ));
    assert!(
        matches!(&e, PackageError::ManifestInvalid { field, .. } if field == "package.readme"),
        "{e:?}"
    );
    let e = parse_err(&format!("{SMALL}\n[limits]\nmemory_mib = 0\n"));
    assert!(
        matches!(&e, PackageError::ManifestInvalid { field, .. } if field == "limits.memory_mib"),
        "{e:?}"
    );
    let e = parse_err(&format!("{SMALL}depend_type = \"firm\"\n"));
    assert!(e.to_string().contains("firm"), "{e}");
    // Required fields.
    let e = parse_err(&SMALL.replace("license = \"MIT\"\n", ""));
    assert!(e.to_string().contains("missing field `license`"), "{e}");
}

#[test]
fn the_policy_refuses_each_excess_by_name() {
    let m = Manifest::parse(&MANIFEST.replace("memory_mib = 64", "memory_mib = 512")).unwrap();
    let policy = InstallPolicy::default();
    let e = m.check_against(&policy).unwrap_err();
    assert_eq!(
        e.to_string(),
        "refused by the operator's policy: limits.memory_mib: requested 512 MiB, the operator allows at most 128 MiB"
    );

    let strict = InstallPolicy {
        max_limits: PackageLimits {
            memory_mib: Some(32),
            deadline_ms: Some(50),
            fuel: Some(10),
            max_reply_kib: Some(64),
        },
        allowed_capabilities: [plugboard_package::Capability::Log].into_iter().collect(),
        protected_names: vec!["audit".into()],
        ..InstallPolicy::default()
    };
    let m = Manifest::parse(MANIFEST).unwrap();
    let v = m.violations(&strict);
    let text: Vec<String> = v.iter().map(ToString::to_string).collect();
    assert_eq!(
        text,
        [
            "package.name: `audit` is a protected name",
            "limits.memory_mib: requested 64 MiB, the operator allows at most 32 MiB",
            "limits.deadline_ms: requested 100 ms, the operator allows at most 50 ms",
            "limits.fuel: requested 1000000 fuel units, the operator allows at most 10 fuel units",
            "limits.max_reply_kib: requested 1024 KiB, the operator allows at most 64 KiB",
            "capabilities.settings: the operator does not allow this capability",
            "capabilities.clock: the operator does not allow this capability",
        ]
    );
    assert!(matches!(
        m.check_against(&strict),
        Err(PackageError::Policy(PolicyViolation::ProtectedName { .. }))
    ));
    assert!(m.check_against(&InstallPolicy::default()).is_ok());
}

#[test]
fn the_policy_checks_plugin_names_host_and_contract() {
    let text = SMALL.replace("priority = 10", "priority = 10\nplugin = \"session\"");
    let m = Manifest::parse(&text).unwrap();
    let policy = InstallPolicy {
        protected_names: vec!["session".into()],
        ..InstallPolicy::default()
    };
    assert_eq!(
        m.violations(&policy),
        [PolicyViolation::ProtectedName {
            field: "hooks[0].plugin".into(),
            name: "session".into()
        }]
    );
    let m =
        Manifest::parse(&SMALL.replace("contract = \"0.2\"", "contract = \"0.5\"\nhost = \">=2\""))
            .unwrap();
    let v: Vec<String> = m
        .violations(&InstallPolicy::default())
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(
        v,
        [
            "package.host: the package requires host >=2, this host is 0.1.0",
            "package.contract: the package requires contract ^0.5, this host serves plugboard:plugin 0.4.0, 0.3.0, 0.2.0",
        ]
    );
}

#[test]
fn the_contract_version_is_plugboard_cores() {
    assert_eq!(
        plugboard_package::contract_version().to_string(),
        plugboard_core::CONTRACT_VERSION
    );
}

#[test]
fn settings_without_the_capability_to_read_them_are_refused_naming_the_fix() {
    let e = parse_err(&MANIFEST.replace("settings = true\n", ""));
    let msg = e.to_string();
    assert!(msg.contains("package.settings_schema"), "{msg}");
    assert!(msg.contains("line 10"), "{msg}");
    assert!(
        msg.contains("add `settings = true` under [capabilities]"),
        "{msg}"
    );
}
