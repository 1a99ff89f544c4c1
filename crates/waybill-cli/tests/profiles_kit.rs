//! The profile author's kit on the built-in profiles: every golden case of
//! `crates/waybill-carriers/profiles` passes `waybill profiles test`, and a case whose expected
//! output is wrong fails with the path of the difference.

use std::path::PathBuf;

use waybill_cli::profiles::{explain, test_dir};

fn builtins() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../waybill-carriers/profiles")
}

#[test]
fn every_builtin_golden_case_passes() {
    let report = test_dir(&builtins(), false).unwrap();
    assert_eq!(report.failed, 0, "{:#?}", report.lines);
    assert!(report.passed >= 4, "{:#?}", report.lines);
}

#[test]
fn a_wrong_expectation_fails_and_names_the_place() {
    let dir = std::env::temp_dir().join(format!("waybill-kit-{}", std::process::id()));
    let cases = dir.join("sendcloud");
    std::fs::create_dir_all(&cases).unwrap();
    std::fs::copy(
        builtins().join("sendcloud.toml"),
        dir.join("sendcloud.toml"),
    )
    .unwrap();
    std::fs::copy(
        builtins().join("sendcloud/other-action.json"),
        cases.join("other-action.json"),
    )
    .unwrap();
    let expected = std::fs::read_to_string(builtins().join("sendcloud/other-action.expected.json"))
        .unwrap()
        .replace("\"ignored\": true", "\"ignored\": false");
    std::fs::write(cases.join("other-action.expected.json"), expected).unwrap();
    let report = test_dir(&dir, false).unwrap();
    assert_eq!((report.passed, report.failed), (0, 1));
    assert!(report.lines[0].contains("$/ignored"), "{:?}", report.lines);
    // --update writes what the profile produces; then it passes.
    assert_eq!(test_dir(&dir, true).unwrap().failed, 0);
    assert_eq!(test_dir(&dir, false).unwrap().failed, 0);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn check_explains_contradictions_with_line_and_column() {
    let text = "name = \"x\"\n[verify]\nscheme = \"hmac_sha256\"\nprefix = \"a\"\nencoding = \"base64url\"\n[mapping.events]\ncurrent = \"$\"\n[mapping.fields]\ntracking_number = \"$/t\"\nstatus = \"@/s\"\n";
    let error = waybill_carriers::CarrierProfile::from_toml("x.toml", text).unwrap_err();
    let explained = explain(&error, text);
    assert!(
        explained.starts_with("line 5, column 1: field `verify.encoding`"),
        "{explained}"
    );
}

/// Every built-in profile has golden cases, run through the real `waybill profiles test`: at
/// least two per profile, at least one verifying a signature when the profile checks one, and
/// all of them pass.
#[test]
fn every_builtin_has_golden_cases_that_pass_through_the_binary() {
    let dir = builtins();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_waybill"))
        .args(["profiles", "test"])
        .arg(&dir)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(!stdout.contains("FAIL"), "{stdout}");

    let registry = waybill_carriers::ProfileRegistry::builtin();
    let names: Vec<&str> = registry.names().collect();
    assert!(names.len() >= 9, "{names:?}");
    for name in names {
        let cases = dir.join(name);
        let files: Vec<String> = std::fs::read_dir(&cases)
            .unwrap_or_else(|error| panic!("built-in `{name}` has no golden dir: {error}"))
            .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        let expected: Vec<&String> = files
            .iter()
            .filter(|file| file.ends_with(".expected.json"))
            .collect();
        assert!(expected.len() >= 2, "`{name}` has {expected:?}");
        for file in &expected {
            let sample = file.replace(".expected.json", ".json");
            assert!(files.contains(&sample), "`{name}`: {file} without {sample}");
            let line = format!("ok   {}", cases.join(&sample).display());
            assert!(stdout.contains(&line), "`{name}`: {line} not in\n{stdout}");
        }
        let profile = registry.get(name).unwrap();
        if profile.verification_scheme() != "none" {
            assert!(
                files.iter().any(|file| file.ends_with(".headers")),
                "`{name}` verifies signatures ({}) but has no signed case",
                profile.verification_scheme()
            );
        }
    }
}
