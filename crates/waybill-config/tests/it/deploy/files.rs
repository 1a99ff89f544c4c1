//! Reading the deployment files as the tools that use them do: YAML documents (with Compose's
//! merge keys), kustomize's resource lists, the workloads' containers, the Dockerfile's lines.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use yaml_rust2::yaml::Hash;
use yaml_rust2::{Yaml, YamlLoader};

/// The repository root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A file of the repository, as text.
pub fn read(path: &str) -> String {
    std::fs::read_to_string(root().join(path)).unwrap_or_else(|error| panic!("{path}: {error}"))
}

/// The YAML documents of a file.
pub fn yaml(path: &str) -> Vec<Yaml> {
    yaml_text(&read(path), path)
}

/// The YAML documents of a text, with YAML 1.1 merge keys (`<<: *anchor`, which Compose files
/// use) resolved: explicit keys win over merged ones.
pub fn yaml_text(text: &str, what: &str) -> Vec<Yaml> {
    let documents =
        YamlLoader::load_from_str(text).unwrap_or_else(|error| panic!("{what}: {error}"));
    documents.into_iter().map(merge_keys).collect()
}

fn merge_keys(node: Yaml) -> Yaml {
    match node {
        Yaml::Hash(hash) => {
            let (mut own, mut merged) = (Hash::new(), Hash::new());
            for (key, value) in hash {
                match (key.as_str(), merge_keys(value)) {
                    (Some("<<"), Yaml::Hash(anchor)) => merged.extend(anchor),
                    (_, value) => {
                        own.insert(key, value);
                    }
                }
            }
            for (key, value) in merged {
                own.entry(key).or_insert(value);
            }
            Yaml::Hash(own)
        }
        Yaml::Array(items) => Yaml::Array(items.into_iter().map(merge_keys).collect()),
        other => other,
    }
}

/// The documents of the files a kustomization lists under `resources` (files only).
pub fn kustomization(dir: &str) -> Vec<Yaml> {
    let manifest = &yaml(&format!("{dir}/kustomization.yaml"))[0];
    strings(&manifest["resources"])
        .iter()
        .filter(|resource| {
            Path::new(resource)
                .extension()
                .is_some_and(|extension| extension == "yaml")
        })
        .flat_map(|resource| yaml(&format!("{dir}/{resource}")))
        .collect()
}

/// The Kubernetes base.
pub fn base() -> Vec<Yaml> {
    kustomization("deploy/k8s/base")
}

/// The strings of a YAML sequence (empty when it is none).
pub fn strings(node: &Yaml) -> Vec<String> {
    node.as_vec()
        .map(|items| items.iter().filter_map(scalar).collect::<Vec<_>>())
        .unwrap_or_default()
}

/// A scalar as text (YAML reads `8080` as a number and `"8080"` as a string; both are 8080).
pub fn scalar(node: &Yaml) -> Option<String> {
    match node {
        Yaml::String(text) | Yaml::Real(text) => Some(text.clone()),
        Yaml::Integer(number) => Some(number.to_string()),
        Yaml::Boolean(flag) => Some(flag.to_string()),
        _ => None,
    }
}

/// The one document of `kind` named `name`.
pub fn find<'a>(documents: &'a [Yaml], kind: &str, name: &str) -> &'a Yaml {
    documents
        .iter()
        .find(|document| {
            document["kind"].as_str() == Some(kind)
                && document["metadata"]["name"].as_str() == Some(name)
        })
        .unwrap_or_else(|| panic!("no {kind} {name}"))
}

/// Every document of `kind`.
pub fn all<'a>(documents: &'a [Yaml], kind: &str) -> Vec<&'a Yaml> {
    documents
        .iter()
        .filter(|document| document["kind"].as_str() == Some(kind))
        .collect()
}

/// The (single) container of a Deployment's or Job's pod.
pub fn container(workload: &Yaml) -> &Yaml {
    &workload["spec"]["template"]["spec"]["containers"][0]
}

/// The variables a container gets: its `env` names and the keys of the ConfigMaps it takes
/// whole (`envFrom`), read from `documents`.
pub fn variables(container: &Yaml, documents: &[Yaml]) -> BTreeSet<String> {
    let mut names: BTreeSet<String> = container["env"]
        .as_vec()
        .into_iter()
        .flatten()
        .filter_map(|variable| variable["name"].as_str().map(str::to_owned))
        .collect();
    for source in container["envFrom"].as_vec().into_iter().flatten() {
        if let Some(config_map) = source["configMapRef"]["name"].as_str() {
            let data = &find(documents, "ConfigMap", config_map)["data"];
            names.extend(
                data.as_hash()
                    .into_iter()
                    .flatten()
                    .filter_map(|(key, _)| scalar(key)),
            );
        }
    }
    names
}

/// The programs a command starts: its first word, or each command of an `sh -c` script.
pub fn programs(command: &[String]) -> Vec<String> {
    match command {
        [shell, flag, script, ..] if (shell == "sh" || shell == "bash") && flag == "-c" => script
            .split("&&")
            .filter_map(|part| part.split_whitespace().next().map(str::to_owned))
            .collect(),
        [program, ..] => vec![program.clone()],
        [] => Vec::new(),
    }
}

/// A duration as Compose writes it (`15s`, `1m30s`), in seconds.
pub fn compose_seconds(text: &str) -> u64 {
    let (mut total, mut number) = (0, 0);
    for character in text.chars() {
        match character {
            '0'..='9' => number = number * 10 + u64::from(character as u8 - b'0'),
            's' => (total, number) = (total + number, 0),
            'm' => (total, number) = (total + number * 60, 0),
            'h' => (total, number) = (total + number * 3600, 0),
            _ => panic!("`{text}` is not a duration like 15s"),
        }
    }
    total
}

/// The Dockerfile's instructions, continuation lines joined, comments dropped.
pub fn dockerfile() -> Vec<String> {
    let mut instructions = Vec::new();
    let mut current = String::new();
    for line in read("deploy/Dockerfile").lines() {
        let line = line.trim();
        if line.starts_with('#') || (current.is_empty() && line.is_empty()) {
            continue;
        }
        match line.strip_suffix('\\') {
            Some(head) => current.push_str(head),
            None => {
                current.push_str(line);
                instructions.push(std::mem::take(&mut current));
            }
        }
    }
    instructions
}

/// Whether `.dockerignore`'s rules keep `path` out of the build context: Docker's patterns
/// (path components matched with `*` and `?`, `**` for any number of them), where a rule that
/// matches a parent directory excludes everything under it and a later `!` rule re-includes.
pub fn dockerignored(rules: &[String], path: &str) -> bool {
    let parts: Vec<&str> = path.split('/').collect();
    let mut excluded = false;
    for rule in rules {
        let (negated, pattern) = match rule.strip_prefix('!') {
            Some(pattern) => (true, pattern),
            None => (false, rule.as_str()),
        };
        let pattern: Vec<&str> = pattern.trim_matches('/').split('/').collect();
        if (1..=parts.len()).any(|end| glob(&pattern, &parts[..end])) {
            excluded = !negated;
        }
    }
    excluded
}

fn glob(pattern: &[&str], path: &[&str]) -> bool {
    match (pattern.first(), path.first()) {
        (None, None) => true,
        (Some(&"**"), _) => {
            glob(&pattern[1..], path) || (!path.is_empty() && glob(pattern, &path[1..]))
        }
        (Some(part), Some(name)) => {
            component(part.as_bytes(), name.as_bytes()) && glob(&pattern[1..], &path[1..])
        }
        _ => false,
    }
}

fn component(pattern: &[u8], name: &[u8]) -> bool {
    match (pattern.first(), name.first()) {
        (None, None) => true,
        (Some(b'*'), _) => {
            component(&pattern[1..], name) || (!name.is_empty() && component(pattern, &name[1..]))
        }
        (Some(b'?'), Some(_)) => component(&pattern[1..], &name[1..]),
        (Some(expected), Some(actual)) => {
            expected == actual && component(&pattern[1..], &name[1..])
        }
        _ => false,
    }
}
