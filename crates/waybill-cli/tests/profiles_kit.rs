//! The profile author's kit on the built-in profiles: every golden case of
//! `crates/waybill-carriers/profiles` passes `waybill profiles test`, and a case whose expected
//! output is wrong fails with the path of the difference.

use std::path::{Path, PathBuf};

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

/// A profiles directory of its own under the system's temporary directory holding `NAME.toml`,
/// and the (empty) case directory `NAME/`. The profile checks signatures as `verify` says (the
/// lines of its `[verify]` table) and maps one event, the whole body, with its tracking number,
/// status and time at the paths `fields`.
fn kit_dir(
    tag: &str,
    name: &str,
    verify: &str,
    [number, status, time]: [&str; 3],
) -> (PathBuf, PathBuf) {
    let profile = format!(
        r#"format_version = 2
name = "{name}"
[verify]
{verify}[mapping.events]
current = "$"
[mapping.fields]
tracking_number = "{number}"
status = "{status}"
time = "{time}"
[mapping.status]
canonical_names = true
"#
    );
    let dir = std::env::temp_dir().join(format!("waybill-kit-{tag}-{}", std::process::id()));
    let cases = dir.join(name);
    std::fs::create_dir_all(&cases).unwrap();
    std::fs::write(dir.join(format!("{name}.toml")), profile).unwrap();
    (dir, cases)
}

/// `--update` writes the one case's expected output and it passes; a run without it passes too.
fn writes_and_passes_its_one_case(dir: &Path) {
    let written = test_dir(dir, true).unwrap();
    assert_eq!(
        (written.passed, written.failed),
        (1, 0),
        "{:?}",
        written.lines
    );
    assert_eq!(test_dir(dir, false).unwrap().failed, 0);
}

/// A golden case of a public-key profile: the keys are the case directory's `public-keys` file
/// (here a JWKS); a signature that does not match fails the case.
#[test]
fn golden_cases_verify_public_key_signatures() {
    let keys =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../waybill-carriers/tests/fixtures/keys");
    let (dir, cases) = kit_dir(
        "rsa",
        "acme",
        r#"algorithm = "rsa_sha256"
signed = "{timestamp}.{body}"
timestamp = "X-Timestamp"
key_id = "X-Key-Id"
signature = "X-Signature"
encoding = "base64"
"#,
        ["$/tracking_number", "$/status", "$/time"],
    );
    std::fs::copy(keys.join("jwks.json"), cases.join("public-keys")).unwrap();
    std::fs::write(
        cases.join("signed.json"),
        r#"{"tracking_number":"RS123","status":"Delivered","time":"2026-11-27T10:00:00Z"}"#,
    )
    .unwrap();
    let signature = std::fs::read_to_string(keys.join("rsa.sig.b64")).unwrap();
    let headers = format!(
        "X-Timestamp: 1795823940\nX-Key-Id: rsa-2026\nX-Signature: {}\n",
        signature.trim()
    );
    std::fs::write(cases.join("signed.headers"), &headers).unwrap();

    writes_and_passes_its_one_case(&dir);
    let expected = std::fs::read_to_string(cases.join("signed.expected.json")).unwrap();
    assert!(expected.contains("\"status\": \"Delivered\""), "{expected}");

    // Another key id: no key has it, the case fails with the reason.
    std::fs::write(
        cases.join("signed.headers"),
        headers.replace("rsa-2026", "ec-2026"),
    )
    .unwrap();
    let report = test_dir(&dir, false).unwrap();
    assert_eq!(report.failed, 1, "{:?}", report.lines);
    assert!(
        report.lines[0].contains("verification failed"),
        "{:?}",
        report.lines
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A golden case of a profile that carries its signature in the query: `CASE.url` is the request
/// target the sample was sent to.
#[test]
fn golden_cases_verify_signatures_in_the_url() {
    let (dir, cases) = kit_dir(
        "url",
        "querysig",
        r#"algorithm = "sha256"
signed = "{body}/{secret}"
signature = { query = "sig" }
encoding = "hex"
"#,
        ["$/n", "$/s", "$/t"],
    );
    std::fs::write(cases.join("secrets"), "k\n").unwrap();
    let body = r#"{"n":"Q1","s":"Delivered","t":"2026-11-27T10:00:00Z"}"#;
    std::fs::write(cases.join("signed.json"), body).unwrap();
    // hex(SHA-256(body + "/" + "k")), computed independently with Python's hashlib.
    let digest = "f564d3f15afc9c05d58dab5f92a83391123f103711398a3465a2d33f318ca4c5";
    // A `.headers` file makes the case a signed one, even when the signature is in the URL.
    std::fs::write(cases.join("signed.headers"), "X-Request-Id: abc\n").unwrap();
    std::fs::write(
        cases.join("signed.url"),
        format!("/v1/webhooks/q?sig={digest}\n"),
    )
    .unwrap();
    writes_and_passes_its_one_case(&dir);

    // The same case sent to a URL without the signature fails.
    std::fs::write(cases.join("signed.url"), "/v1/webhooks/q\n").unwrap();
    let report = test_dir(&dir, false).unwrap();
    assert_eq!(report.failed, 1, "{:?}", report.lines);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `waybill profiles map NAME` finds the built-in even where a directory of that name exists
/// (the golden cases' own directory), and output cut short by its reader is not a panic.
#[test]
fn map_by_name_beside_a_directory_and_a_closed_pipe() {
    use std::process::{Command, Stdio};
    let output = Command::new(env!("CARGO_BIN_EXE_waybill"))
        .current_dir(builtins())
        .args([
            "profiles",
            "map",
            "17track",
            "17track/tracking-stopped.json",
        ])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let printed: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(printed["ignored"], true);

    // The reader goes away before the output is written (`… | head -0`).
    let mut child = Command::new(env!("CARGO_BIN_EXE_waybill"))
        .args(["profiles", "test"])
        .arg(builtins())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let finished = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&finished.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(finished.status.success(), "{stderr}");
}
