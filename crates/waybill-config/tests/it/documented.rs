//! Every configuration key the loader accepts has its row in `docs/configuration.md`, under
//! the heading of its table: the document is checked against the real `Settings`, so a key
//! added to the code without its line in the docs fails here.

use std::collections::BTreeSet;

use serde_json::{Map, Value};
use waybill_config::Settings;

/// A configuration whose one source, one profile override and one source budget set every
/// optional key, so that serialising it names every key the loader knows.
const EVERY_KEY: &str = r#"
profiles_dir = "PROFILES_DIR"

[polling.profiles.starshipit]
interval_secs = 3600

[polling.sources.every-key]
rate_limit_per_second = 2.0

[[sources]]
id = "every-key"
profile = "starshipit"
secrets = ["s"]
public_keys = []
jwks_url = "https://keys.example/jwks.json"
tenant = "t"
require_registration = false
mode = "hybrid"
credentials = { api_key = "k" }
poll_base_url = "https://api.example"
rate_limit_per_second = 5.0
"#;

/// The sample, with `profiles_dir` an empty directory that exists.
fn every_key() -> Settings {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("documented-profiles");
    std::fs::create_dir_all(&dir).expect("an empty profiles directory");
    let toml = EVERY_KEY.replace("PROFILES_DIR", &dir.display().to_string());
    Settings::from_toml_str(&toml).expect("the sample configuration loads")
}

/// Tables whose keys are names the user chooses (`[polling.profiles.<profile>]`): their
/// entries are documented once, under a heading that starts with the table's name.
const NAMED_TABLES: [&str; 2] = ["polling.profiles", "polling.sources"];

/// `(table, key)` for every key: `table` is `[ingress]`, `[polling.intervals]`,
/// `[[sources]]`, `[polling.profiles.<`, or the key itself for a top-level key.
fn keys_of(settings: &Settings) -> BTreeSet<(String, String)> {
    let Value::Object(tables) = serde_json::to_value(settings).expect("settings serialise") else {
        panic!("settings serialise to an object")
    };
    let mut keys = BTreeSet::new();
    for (name, table) in tables {
        match table {
            Value::Object(fields) => collect(&name, &fields, &mut keys),
            Value::Array(items) => {
                for item in items {
                    if let Value::Object(fields) = item {
                        for key in fields.keys() {
                            keys.insert((format!("[[{name}]]"), key.clone()));
                        }
                    }
                }
            }
            _ => {
                keys.insert((format!("`{name}`"), name));
            }
        }
    }
    keys
}

fn collect(path: &str, fields: &Map<String, Value>, keys: &mut BTreeSet<(String, String)>) {
    let named = NAMED_TABLES.contains(&path);
    for (key, value) in fields {
        match value {
            Value::Object(inner) if named => {
                for entry_key in inner.keys() {
                    keys.insert((format!("[{path}.<"), entry_key.clone()));
                }
            }
            Value::Object(inner) => collect(&format!("{path}.{key}"), inner, keys),
            _ => {
                keys.insert((format!("[{path}]"), key.clone()));
            }
        }
    }
}

/// `(heading, key)` for every `| \`key\` |` row, under the last `##`/`###` heading that names
/// a table or key in backquotes.
fn documented_rows(document: &str) -> Vec<(String, String)> {
    let mut rows = Vec::new();
    let mut heading = String::new();
    for line in document.lines() {
        let title = line
            .strip_prefix("## ")
            .or_else(|| line.strip_prefix("### "));
        if let Some(title) = title {
            if title.starts_with('`') {
                heading = title.trim().to_owned();
            }
        } else if let Some(rest) = line.strip_prefix("| `")
            && let Some(end) = rest.find('`')
        {
            rows.push((heading.clone(), rest[..end].to_owned()));
        }
    }
    rows
}

/// The keys without their row, as `table key`.
fn undocumented(keys: &BTreeSet<(String, String)>, document: &str) -> Vec<String> {
    let rows = documented_rows(document);
    keys.iter()
        .filter(|(table, key)| {
            let top_level = table == &format!("`{key}`");
            let has_row = rows
                .iter()
                .any(|(heading, row)| heading.contains(table.as_str()) && row == key);
            let has_section = document.contains(&format!("## {table}\n"));
            !(has_row || top_level && has_section)
        })
        .map(|(table, key)| format!("{table} {key}"))
        .collect()
}

#[test]
fn every_configuration_key_is_documented_under_its_table() {
    let settings = every_key();
    let document = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../docs/configuration.md"
    ))
    .expect("docs/configuration.md");
    let keys = keys_of(&settings);
    assert!(
        keys.contains(&("[polling.intervals]".to_owned(), "interval_secs".to_owned()))
            && keys.contains(&(
                "[polling.sources.<".to_owned(),
                "rate_limit_per_second".to_owned()
            ))
            && keys.contains(&("[[sources]]".to_owned(), "jwks_url".to_owned())),
        "the sample names nested, named-table and array keys: {keys:#?}"
    );
    let missing = undocumented(&keys, &document);
    assert!(
        missing.is_empty(),
        "keys without a row in docs/configuration.md (under the `## [table]` heading): {missing:#?}"
    );
}

#[test]
fn the_check_sees_a_missing_row() {
    let settings = every_key();
    let keys = keys_of(&settings);
    let document = "## `[worker]`\n| `addr` | x | y |\n### Limits\n| `prefetch` | x | y |\n\
                    ## `profiles_dir`\ntext\n";
    let missing = undocumented(&keys, document);
    assert!(!missing.contains(&"[worker] addr".to_owned()));
    assert!(
        !missing.contains(&"[worker] prefetch".to_owned()),
        "rows under a plain subheading count"
    );
    assert!(!missing.contains(&"`profiles_dir` profiles_dir".to_owned()));
    assert!(missing.contains(&"[worker] batch_size".to_owned()));
    assert!(missing.contains(&"[polling.intervals] interval_secs".to_owned()));
    assert!(missing.contains(&"[[sources]] secrets".to_owned()));
}

/// The top-level modules a crate declares in its `lib.rs` or `main.rs` (`mod x;`).
fn modules_of(crate_dir: &std::path::Path) -> Vec<String> {
    let mut modules = Vec::new();
    for root in ["src/lib.rs", "src/main.rs"] {
        let Ok(text) = std::fs::read_to_string(crate_dir.join(root)) else {
            continue;
        };
        for line in text.lines() {
            let line = line.trim_start();
            let declaration = line
                .strip_prefix("pub mod ")
                .or_else(|| line.strip_prefix("pub(crate) mod "))
                .or_else(|| line.strip_prefix("mod "));
            if let Some(name) = declaration.and_then(|rest| rest.strip_suffix(';')) {
                modules.push(name.to_owned());
            }
        }
    }
    modules
}

/// `ARCHITECTURE.md`'s code map names every crate (a `### \`crates/<name>\`` section) and, in
/// that section, every top-level module of the crate.
#[test]
fn docs_match_code() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let map = std::fs::read_to_string(root.join("ARCHITECTURE.md")).expect("ARCHITECTURE.md");
    let mut missing = Vec::new();
    let mut crates: Vec<_> = std::fs::read_dir(root.join("crates"))
        .expect("crates/")
        .map(|entry| entry.expect("a crate directory").path())
        .collect();
    crates.sort();
    for crate_dir in crates {
        let name = crate_dir
            .file_name()
            .unwrap()
            .to_string_lossy()
            .into_owned();
        let heading = format!("### `crates/{name}`");
        let Some(start) = map.find(&heading) else {
            missing.push(format!("crate {name}"));
            continue;
        };
        let section = &map[start + heading.len()..];
        let section = &section[..section.find("\n#").unwrap_or(section.len())];
        for module in modules_of(&crate_dir) {
            if !section.contains(&format!("`{module}`")) {
                missing.push(format!("{name}::{module}"));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "missing from ARCHITECTURE.md's code map: {missing:#?}"
    );
}
