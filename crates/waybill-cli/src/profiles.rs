//! `waybill profiles check|map|test`: the profile author's kit. It needs no database, broker or
//! configuration file: a profile file and sample payloads are enough.
//!
//! * `check FILE…` loads each file and explains what is wrong with the file, key, line and
//!   column.
//! * `map FILE SAMPLE` verifies the sample (when given a secret or key and its headers) and maps
//!   it exactly as the ingress would, printing the events, rejected elements and filters' verdict
//!   as JSON.
//! * `test DIR` runs golden tests: for each `NAME.toml` in `DIR`, every sample in `DIR/NAME/`
//!   is mapped and compared with its `CASE.expected.json` (`--update` writes them).

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use clap::{Args, Subcommand};
use http::{HeaderMap, HeaderName, HeaderValue};
use serde_json::{Value, json};
use waybill_carriers::{
    CarrierProfile, Credentials, KeySet, Mapped, ProfileError, ProfileRegistry, UnverifiedRequest,
};

/// `waybill profiles …`.
#[derive(Debug, Subcommand)]
pub enum ProfilesCommand {
    /// Load profile files and explain every error with its key, line and column.
    Check {
        /// Profile files (`*.toml`).
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Print the outcome as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Verify (with `--secret`/`--public-key`) and map a sample payload; print the result as JSON.
    Map(MapArgs),
    /// Run the golden tests of a directory of profiles (see `docs/carrier-profiles.md`).
    Test {
        /// A directory of `NAME.toml` profiles with their cases in `NAME/`.
        dir: PathBuf,
        /// Write each case's output as its expected file instead of comparing.
        #[arg(long)]
        update: bool,
    },
}

/// `waybill profiles map` arguments.
#[derive(Debug, Args)]
pub struct MapArgs {
    /// A profile file, or the name of a built-in profile.
    pub profile: String,
    /// The sample payload, exactly as the carrier sends it.
    pub sample: PathBuf,
    /// A request header, `Name: value` (repeatable): the signature and its companions.
    #[arg(long = "header", value_name = "NAME:VALUE")]
    pub headers: Vec<String>,
    /// A secret to verify with (repeatable). Without a secret or key, nothing is verified.
    #[arg(long = "secret")]
    pub secrets: Vec<String>,
    /// A file with a public key (PEM, JWK or JWKS) to verify with (repeatable).
    #[arg(long = "public-key")]
    pub public_keys: Vec<PathBuf>,
    /// The request target the sample was sent to (`/v1/webhooks/x?sig=…`), for schemes that
    /// sign the URL or carry the signature in the query.
    #[arg(long)]
    pub url: Option<String>,
    /// When the request was received (RFC 3339); default: now.
    #[arg(long)]
    pub received_at: Option<DateTime<Utc>>,
}

/// The receipt time of golden cases: fixed, so outputs do not change from run to run, and late
/// enough that every sample's scan times are in its past.
pub const GOLDEN_RECEIVED_AT: &str = "2030-01-01T00:00:00Z";

/// Runs a `profiles` command. Returns false when something failed (the caller exits non-zero).
pub fn run(command: ProfilesCommand) -> anyhow::Result<bool> {
    match command {
        ProfilesCommand::Check { files, json } => {
            let mut lines = Vec::new();
            let all_ok = check(&files, json, &mut lines);
            write_stdout(&lines)?;
            Ok(all_ok)
        }
        ProfilesCommand::Map(args) => {
            let output = map(&args)?;
            write_stdout(&[serde_json::to_string_pretty(&output)?])?;
            Ok(true)
        }
        ProfilesCommand::Test { dir, update } => {
            let report = test_dir(&dir, update)?;
            let mut lines = report.lines.clone();
            lines.push(format!(
                "{} passed, {} failed",
                report.passed, report.failed
            ));
            write_stdout(&lines)?;
            Ok(report.failed == 0)
        }
    }
}

/// Writes lines to stdout. A reader that went away (`waybill profiles test … | head`) is not an
/// error: the output was wanted only so far (`println!` would panic there).
fn write_stdout(lines: &[String]) -> anyhow::Result<()> {
    use std::io::Write as _;
    let mut stdout = std::io::stdout().lock();
    let written = lines
        .iter()
        .try_for_each(|line| writeln!(stdout, "{line}"))
        .and_then(|()| stdout.flush());
    match written {
        Err(error) if error.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => Ok(other?),
    }
}

fn check(files: &[PathBuf], json: bool, lines: &mut Vec<String>) -> bool {
    let mut all_ok = true;
    for file in files {
        let outcome = std::fs::read_to_string(file)
            .map_err(|error| format!("cannot read: {error}"))
            .and_then(|text| {
                CarrierProfile::from_toml(&file.display().to_string(), &text)
                    .map_err(|error| explain(&error, &text))
            });
        all_ok &= outcome.is_ok();
        match (outcome, json) {
            (Ok(profile), false) => lines.push(format!(
                "{}: ok (profile `{}`, format {}, verification {})",
                file.display(),
                profile.name,
                profile.format_version(),
                profile.verification_scheme()
            )),
            (Err(reason), false) => lines.push(format!("{}: {reason}", file.display())),
            (Ok(profile), true) => lines.push(
                json!({"file": file.display().to_string(), "ok": true, "profile": profile.name})
                    .to_string(),
            ),
            (Err(reason), true) => lines.push(
                json!({"file": file.display().to_string(), "ok": false, "error": reason})
                    .to_string(),
            ),
        }
    }
    all_ok
}

/// An error as `line L, column C: field `x`: reason`, locating contradictions (which the TOML
/// reader does not place) by their key.
pub fn explain(error: &ProfileError, text: &str) -> String {
    match error {
        ProfileError::Parse {
            field,
            line,
            column,
            reason,
            ..
        } => format!("line {line}, column {column}: field `{field}`: {reason}"),
        ProfileError::Invalid { field, reason, .. } => match locate(text, field) {
            Some((line, column)) => {
                format!("line {line}, column {column}: field `{field}`: {reason}")
            }
            None => format!("field `{field}`: {reason}"),
        },
        other => other.to_string(),
    }
}

/// The line and column of a dotted key (`verify.header`): its line after its table's header.
fn locate(text: &str, field: &str) -> Option<(usize, usize)> {
    let (table, key) = field.rsplit_once('.').unwrap_or(("", field));
    let mut in_table = table.is_empty();
    let mut table_line = None;
    for (index, line) in text.lines().enumerate() {
        let trimmed = line.trim_start();
        if let Some(header) = trimmed.strip_prefix('[') {
            let name = header
                .trim_start_matches('[')
                .split(']')
                .next()
                .unwrap_or("")
                .trim();
            in_table = name == table;
            if in_table {
                table_line = Some(index + 1);
            }
            continue;
        }
        let is_key = trimmed
            .strip_prefix(key)
            .is_some_and(|rest| rest.trim_start().starts_with('='));
        if in_table && is_key {
            return Some((index + 1, line.len() - trimmed.len() + 1));
        }
    }
    table_line.map(|line| (line, 1))
}

fn load_profile(name_or_file: &str) -> anyhow::Result<CarrierProfile> {
    let path = Path::new(name_or_file);
    if path.is_file() {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        return CarrierProfile::from_toml(name_or_file, &text)
            .map_err(|error| anyhow::anyhow!("{name_or_file}: {}", explain(&error, &text)));
    }
    ProfileRegistry::builtin()
        .get(name_or_file)
        .map(|profile| (*profile).clone())
        .ok_or_else(|| anyhow::anyhow!("no file and no built-in profile named `{name_or_file}`"))
}

fn header_map(lines: &[String]) -> anyhow::Result<HeaderMap> {
    let mut headers = HeaderMap::new();
    for line in lines {
        let (name, value) = line
            .split_once(':')
            .ok_or_else(|| anyhow::anyhow!("a header is `Name: value`, got `{line}`"))?;
        headers.append(
            HeaderName::from_bytes(name.trim().as_bytes())
                .with_context(|| format!("`{}` is not a header name", name.trim()))?,
            HeaderValue::from_str(value.trim())
                .with_context(|| format!("the value of `{}` is not a header value", name.trim()))?,
        );
    }
    Ok(headers)
}

/// Verifies (when credentials are given) and maps a sample; the JSON `map` prints.
pub fn map(args: &MapArgs) -> anyhow::Result<Value> {
    let profile = load_profile(&args.profile)?;
    let body = std::fs::read(&args.sample)
        .with_context(|| format!("cannot read {}", args.sample.display()))?;
    let headers = header_map(&args.headers)?;
    let mut key_texts = Vec::new();
    for file in &args.public_keys {
        key_texts.push(
            std::fs::read_to_string(file)
                .with_context(|| format!("cannot read {}", file.display()))?,
        );
    }
    let keys = KeySet::from_config(&key_texts)?;
    let received_at = args.received_at.unwrap_or_else(Utc::now);
    let verified = if args.secrets.is_empty() && keys.is_empty() {
        eprintln!("not verified: no --secret or --public-key given");
        false
    } else {
        let credentials = Credentials {
            secrets: &args.secrets,
            public_keys: Some(&keys),
            jwks: None,
            url: args.url.as_deref(),
        };
        profile
            .verify_with(
                UnverifiedRequest {
                    headers: &headers,
                    body: &body,
                },
                &credentials,
                received_at,
            )
            .map_err(|error| anyhow::anyhow!("verification failed: {error}"))?;
        true
    };
    let mapped = profile
        .map_stored_body(&body, received_at)
        .map_err(|error| anyhow::anyhow!("the whole request would be refused (400): {error}"))?;
    let mut output = mapped_json(&mapped);
    output["verified"] = Value::Bool(verified);
    Ok(output)
}

/// A mapping result as the kit prints it.
pub fn mapped_json(mapped: &Mapped) -> Value {
    json!({
        "ignored": mapped.ignored,
        "skipped_events": mapped.skipped_events,
        "provider_event_id": mapped.provider_event_id,
        "unmapped_statuses": mapped.unmapped_statuses,
        "events": mapped.events,
        "rejected": mapped.rejected.iter().map(|r| json!({
            "path": r.path,
            "kind": r.kind,
            "reason": r.reason,
            "tracking_number": r.tracking_number,
        })).collect::<Vec<_>>(),
    })
}

/// The outcome of `profiles test`.
#[derive(Debug, Default)]
pub struct TestReport {
    /// Cases that matched (or were written with `--update`).
    pub passed: usize,
    /// Cases that did not.
    pub failed: usize,
    /// One line per case.
    pub lines: Vec<String>,
}

/// Runs (or with `update`, writes) the golden cases of every profile in `dir`.
pub fn test_dir(dir: &Path, update: bool) -> anyhow::Result<TestReport> {
    let mut report = TestReport::default();
    let received_at: DateTime<Utc> = GOLDEN_RECEIVED_AT.parse()?;
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("cannot read {}", dir.display()))?
        .filter_map(|entry| entry.ok().map(|entry| entry.path()))
        .filter(|path| path.extension().is_some_and(|ext| ext == "toml"))
        .collect();
    files.sort();
    for file in files {
        let label = file.display().to_string();
        let text = std::fs::read_to_string(&file)?;
        let profile = match CarrierProfile::from_toml(&label, &text) {
            Ok(profile) => profile,
            Err(error) => {
                report.failed += 1;
                report
                    .lines
                    .push(format!("FAIL {label}: {}", explain(&error, &text)));
                continue;
            }
        };
        let cases_dir = file.with_extension("");
        for sample in samples(&cases_dir)? {
            let case = sample.display().to_string();
            match run_case(&profile, &sample, received_at, update) {
                Ok(()) => {
                    report.passed += 1;
                    report.lines.push(format!("ok   {case}"));
                }
                Err(error) => {
                    report.failed += 1;
                    report.lines.push(format!("FAIL {case}: {error:#}"));
                }
            }
        }
    }
    Ok(report)
}

/// What a case's other files end with (spelt exactly so: the kit writes and documents them in
/// lower case): its expected output, its headers, its request target.
const CASE_COMPANIONS: [&str; 3] = [".expected.json", ".headers", ".url"];

/// The sample payloads of a case directory: every file but expected outputs and companions.
fn samples(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    if !dir.is_dir() {
        return Ok(Vec::new());
    }
    let mut samples: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|entry| entry.ok().map(|entry| entry.path()))
        .filter(|path| {
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            path.is_file()
                && !CASE_COMPANIONS.iter().any(|suffix| name.ends_with(suffix))
                && !name.starts_with('.')
                && name != "secrets"
                && name != "public-keys"
                && name != "README.md"
        })
        .collect();
    samples.sort();
    Ok(samples)
}

/// One case: verify when `CASE.headers` exists (with the directory's `secrets` file, one per
/// line, its `public-keys` file, PEM, JWK or JWKS, for public-key algorithms, and `CASE.url`,
/// the request target, for schemes that sign the URL or carry the signature in the query),
/// map, compare with (or write) `CASE.expected.json`.
fn run_case(
    profile: &CarrierProfile,
    sample: &Path,
    received_at: DateTime<Utc>,
    update: bool,
) -> anyhow::Result<()> {
    let body = std::fs::read(sample)?;
    let stem = sample.with_extension("");
    let headers_file = stem.with_extension("headers");
    if headers_file.exists() {
        verify_case(profile, sample, &stem, &body, received_at)?;
    }
    let output = outcome_json(profile.map_stored_body(&body, received_at));
    compare_or_write(&stem.with_extension("expected.json"), &output, update)
}

/// Verifies a signed case (`STEM.headers`) with the directory's secrets or public keys and the
/// case's URL (`STEM.url`).
fn verify_case(
    profile: &CarrierProfile,
    sample: &Path,
    stem: &Path,
    body: &[u8],
    received_at: DateTime<Utc>,
) -> anyhow::Result<()> {
    let headers_file = stem.with_extension("headers");
    let lines: Vec<String> = std::fs::read_to_string(&headers_file)?
        .lines()
        .filter(|line| !line.trim().is_empty())
        .map(str::to_owned)
        .collect();
    let headers = header_map(&lines)?;
    let secrets_file = sample.with_file_name("secrets");
    let keys_file = sample.with_file_name("public-keys");
    if !secrets_file.exists() && !keys_file.exists() {
        anyhow::bail!(
            "{} needs {} or {}",
            headers_file.display(),
            secrets_file.display(),
            keys_file.display()
        );
    }
    let secrets: Vec<String> = if secrets_file.exists() {
        std::fs::read_to_string(&secrets_file)?
            .lines()
            .map(str::trim)
            .filter(|line| !line.is_empty())
            .map(str::to_owned)
            .collect()
    } else {
        Vec::new()
    };
    let keys = if keys_file.exists() {
        KeySet::from_config(&[std::fs::read_to_string(&keys_file)?])
            .with_context(|| format!("{} holds no usable key", keys_file.display()))?
    } else {
        KeySet::default()
    };
    let url_file = stem.with_extension("url");
    let url = if url_file.exists() {
        Some(std::fs::read_to_string(&url_file)?.trim().to_owned())
    } else {
        None
    };
    let credentials = Credentials {
        secrets: &secrets,
        public_keys: Some(&keys),
        jwks: None,
        url: url.as_deref(),
    };
    profile
        .verify_with(
            UnverifiedRequest {
                headers: &headers,
                body,
            },
            &credentials,
            signed_at(&headers, received_at),
        )
        .map_err(|error| anyhow::anyhow!("verification failed: {error}"))?;
    Ok(())
}

/// Signed samples carry their own time: a case is verified at the first header value that reads
/// as a unix time (milliseconds when the magnitude says so, as in the profile language's
/// `auto`), and mapped at receipt.
fn signed_at(headers: &HeaderMap, received_at: DateTime<Utc>) -> DateTime<Utc> {
    headers
        .iter()
        .filter_map(|(_, value)| value.to_str().ok()?.parse::<i64>().ok())
        .map(|value| {
            if value >= 100_000_000_000 {
                value / 1000
            } else {
                value
            }
        })
        .find_map(|seconds| DateTime::from_timestamp(seconds, 0))
        .unwrap_or(received_at)
}

/// With `update`, writes the case's expected output; otherwise compares with it.
fn compare_or_write(expected_file: &Path, output: &Value, update: bool) -> anyhow::Result<()> {
    if update {
        std::fs::write(expected_file, serde_json::to_string_pretty(output)? + "\n")?;
        return Ok(());
    }
    let expected: Value =
        serde_json::from_str(&std::fs::read_to_string(expected_file).with_context(|| {
            format!(
                "no {} (run with --update to write it)",
                expected_file.display()
            )
        })?)
        .with_context(|| format!("{} is not JSON", expected_file.display()))?;
    if &expected != output {
        anyhow::bail!(
            "output differs from {} at {}",
            expected_file.display(),
            first_difference(&expected, output, "$")
        );
    }
    Ok(())
}

fn outcome_json(mapped: Result<Mapped, waybill_carriers::MapError>) -> Value {
    match mapped {
        Ok(mapped) => mapped_json(&mapped),
        Err(error) => json!({"refused": error.to_string(), "kind": error.kind()}),
    }
}

/// The path of the first place two JSON values differ, with both values there.
fn first_difference(expected: &Value, got: &Value, path: &str) -> String {
    match (expected, got) {
        (Value::Object(a), Value::Object(b)) => {
            for key in a.keys().chain(b.keys()) {
                let (x, y) = (
                    a.get(key).unwrap_or(&Value::Null),
                    b.get(key).unwrap_or(&Value::Null),
                );
                if x != y {
                    return first_difference(x, y, &format!("{path}/{key}"));
                }
            }
            path.to_owned()
        }
        (Value::Array(a), Value::Array(b)) if a.len() == b.len() => {
            for (index, (x, y)) in a.iter().zip(b).enumerate() {
                if x != y {
                    return first_difference(x, y, &format!("{path}/{index}"));
                }
            }
            path.to_owned()
        }
        _ => format!("{path}: expected {expected}, got {got}"),
    }
}
