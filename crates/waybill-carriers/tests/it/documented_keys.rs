//! Every key the profile loader accepts has a row in `docs/carrier-profiles.md`: each table of
//! the profile language is given an unknown key, and the loader's own answer — "unknown field,
//! expected one of …" — lists the keys it knows there. A key added to the language without its
//! line in the reference tables fails here.

use waybill_carriers::CarrierProfile;

/// The smallest valid profile, in parts, so that a probe can slip `zzz = 1` into one table.
const NAME: &str = "name = \"probe\"";
const VERIFY: &str = "[verify]\nscheme = \"none\"";
const EVENTS: &str = "[mapping.events]\ncurrent = \"$\"";
const FIELDS: &str = "[mapping.fields]\ntracking_number = \"$/t\"\nstatus = \"@/s\"";

/// (the table probed, a profile with an unknown key `zzz` in that table).
fn probes() -> Vec<(&'static str, String)> {
    let tail = format!("{EVENTS}\n{FIELDS}");
    let head = format!("{NAME}\n{VERIFY}");
    vec![
        ("top level", format!("{NAME}\nzzz = 1\n{VERIFY}\n{tail}")),
        ("verify", format!("{NAME}\n{VERIFY}\nzzz = 1\n{tail}")),
        (
            "[[verify]]",
            format!(
                "{NAME}\n[[verify]]\nalgorithm = \"sha256\"\nsignature = \"a\"\nzzz = 1\n{tail}"
            ),
        ),
        (
            "a signature source",
            format!(
                "{NAME}\n[verify]\nalgorithm = \"sha256\"\nsignature = {{ header = \"a\", zzz = 1 }}\n{tail}"
            ),
        ),
        ("mapping", format!("{head}\n[mapping]\nzzz = 1\n{tail}")),
        (
            "mapping.body",
            format!("{head}\n[mapping.body]\nzzz = 1\n{tail}"),
        ),
        (
            "mapping.events",
            format!("{head}\n{EVENTS}\nzzz = 1\n{FIELDS}"),
        ),
        (
            "an event filter",
            format!(
                "{head}\n{EVENTS}\n[[mapping.events.when]]\npath = \"@/a\"\nequals = \"b\"\nzzz = 1\n{FIELDS}"
            ),
        ),
        (
            "a payload filter",
            format!("{head}\n[[mapping.ignore]]\npath = \"$/a\"\nequals = \"b\"\nzzz = 1\n{tail}"),
        ),
        ("mapping.fields", format!("{head}\n{tail}\nzzz = 1")),
        (
            "a field table",
            format!(
                "{head}\n{EVENTS}\n[mapping.fields]\ntracking_number = {{ path = \"$/t\", zzz = 1 }}\nstatus = \"@/s\""
            ),
        ),
        (
            "mapping.current_fields",
            format!("{head}\n{tail}\n[mapping.current_fields]\nstatus = \"@/s\"\nzzz = 1"),
        ),
        (
            "mapping.time",
            format!("{head}\n{tail}\n[mapping.time]\nzzz = 1"),
        ),
        (
            "mapping.status",
            format!("{head}\n{tail}\n[mapping.status]\nzzz = 1"),
        ),
        (
            "a status pair",
            format!(
                "{head}\n{tail}\n[[mapping.status.pairs]]\nstatus = \"a\"\nto = \"Delivered\"\nzzz = 1"
            ),
        ),
        (
            "poll",
            format!("{head}\n{tail}\n[poll]\nurl = \"x\"\nzzz = 1"),
        ),
        (
            "poll.basic_auth",
            format!(
                "{head}\n{tail}\n[poll]\nurl = \"x\"\n[poll.basic_auth]\nusername = \"a\"\nzzz = 1"
            ),
        ),
        (
            "poll.response",
            format!("{head}\n{tail}\n[poll]\nurl = \"x\"\n[poll.response]\nzzz = 1"),
        ),
    ]
}

/// The keys an error message offers: every back-quoted word after "expected", or the words of
/// a `{ a | b, c }` list.
fn offered_keys(message: &str) -> Vec<String> {
    let after = message.split_once("expected").map_or("", |(_, rest)| rest);
    let quoted: Vec<String> = after
        .split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_owned)
        .collect();
    if !quoted.is_empty() {
        return quoted;
    }
    after
        .split_once('{')
        .and_then(|(_, rest)| rest.split_once('}'))
        .map(|(list, _)| {
            list.split([',', '|'])
                .map(|key| key.trim().to_owned())
                .filter(|key| !key.is_empty())
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn every_key_the_loader_accepts_is_in_the_reference_tables() {
    let doc = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/carrier-profiles.md"),
    )
    .unwrap();
    let rows: Vec<&str> = doc.lines().filter(|line| line.starts_with('|')).collect();
    let mut missing = Vec::new();
    for (table, text) in probes() {
        let error = CarrierProfile::from_toml("probe.toml", &text)
            .expect_err(&format!("{table}: an unknown key must be an error"))
            .to_string();
        let keys = offered_keys(&error);
        assert!(keys.len() >= 2, "{table}: no keys offered in `{error}`");
        for key in keys {
            // `key`, `table.key`, `key = …`, or the key as a part of a qualified name or a
            // table header (`mapping.body.format`, `[poll.headers]`, `[[mapping.status.pairs]]`).
            let documented = rows.iter().any(|row| {
                [
                    format!("`{key}`"),
                    format!(".{key}`"),
                    format!("`{key} ="),
                    format!("`{key}."),
                    format!(".{key}."),
                    format!("[{key}]"),
                    format!(".{key}]"),
                ]
                .iter()
                .any(|form| row.contains(form.as_str()))
            });
            if !documented {
                missing.push(format!("{table}: `{key}`"));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "keys without a row in docs/carrier-profiles.md: {missing:#?}"
    );
}

#[test]
fn a_custom_time_format_takes_no_other_key() {
    let tail = "[mapping.time]\nformats = [{ strftime = \"%d.%m.%Y\", zone = \"UTC\" }]";
    let text = format!("{NAME}\n{VERIFY}\n{EVENTS}\n{FIELDS}\n{tail}");
    let error = CarrierProfile::from_toml("probe.toml", &text).unwrap_err();
    assert!(
        error.to_string().contains("mapping.time.formats")
            && error.to_string().contains("unknown key `zone`"),
        "{error}"
    );
    let ok = text.replace(", zone = \"UTC\"", "");
    assert!(CarrierProfile::from_toml("probe.toml", &ok).is_ok());
}

#[test]
fn the_probe_itself_is_a_valid_profile() {
    let text = format!("{NAME}\n{VERIFY}\n{EVENTS}\n{FIELDS}");
    assert!(CarrierProfile::from_toml("probe.toml", &text).is_ok());
}
