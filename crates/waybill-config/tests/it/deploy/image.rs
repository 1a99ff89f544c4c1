//! The image: built from the workspace's binaries with the lock file, holding every program the
//! deployments run and nothing of the load tools, from a build context that keeps its sources.

use std::collections::BTreeSet;

use super::files::*;
use super::{ROLES, compose_service, compose_services};

/// The names `cargo build` gives the workspace's binaries.
fn workspace_binaries() -> BTreeSet<String> {
    let mut binaries = BTreeSet::new();
    for entry in std::fs::read_dir(root().join("crates")).expect("crates") {
        let dir = entry.expect("crate").path();
        let manifest: toml::Value =
            toml::from_str(&std::fs::read_to_string(dir.join("Cargo.toml")).expect("manifest"))
                .expect("a valid manifest");
        let bins = manifest
            .get("bin")
            .and_then(toml::Value::as_array)
            .cloned()
            .unwrap_or_default();
        binaries.extend(
            bins.iter()
                .filter_map(|bin| bin.get("name")?.as_str().map(str::to_owned)),
        );
        if bins.is_empty() && dir.join("src/main.rs").exists() {
            binaries.extend(manifest["package"]["name"].as_str().map(str::to_owned));
        }
    }
    binaries
}

#[test]
fn the_image_holds_every_program_the_deployments_run() {
    let instructions = dockerfile();
    let built: BTreeSet<String> = instructions
        .iter()
        .flat_map(|line| line.split_whitespace())
        .filter_map(|word| word.strip_prefix("target/release/").map(str::to_owned))
        .collect();
    let binaries = workspace_binaries();
    assert!(
        built.is_subset(&binaries),
        "the image copies {built:?}, the workspace builds {binaries:?}"
    );
    assert!(
        !built.contains("waybill-bench"),
        "the load tools stay out of the production image"
    );
    let mut in_image = BTreeSet::new();
    for line in instructions.iter().filter(|line| line.starts_with("COPY ")) {
        let words: Vec<&str> = line
            .split_whitespace()
            .filter(|word| !word.starts_with("--"))
            .collect();
        match words.last() {
            Some(&"/usr/local/bin/") => in_image.extend(
                words[1..words.len() - 1]
                    .iter()
                    .map(|source| source.rsplit('/').next().unwrap_or(source).to_owned()),
            ),
            Some(target) if target.starts_with("/usr/local/bin/") => {
                in_image.extend(target.rsplit('/').next().map(str::to_owned));
            }
            _ => {}
        }
    }
    let base = base();
    let mut commands: Vec<Vec<String>> = ROLES
        .iter()
        .map(|(_, kind, name)| strings(&container(find(&base, kind, name))["command"]))
        .collect();
    for (_, service) in compose_services() {
        commands.push(strings(&service["command"]));
        commands.push(
            strings(&service["healthcheck"]["test"])
                .into_iter()
                .skip(1)
                .collect(),
        );
    }
    let default_command = instructions
        .iter()
        .rev()
        .find_map(|line| line.strip_prefix("CMD "));
    let default_command: Vec<String> = default_command
        .map(|json| {
            json.trim_matches(|c| c == '[' || c == ']')
                .split(',')
                .map(|word| word.trim().trim_matches('"').to_owned())
                .collect()
        })
        .unwrap_or_default();
    commands.push(default_command);
    for program in commands.iter().flat_map(|command| programs(command)) {
        assert!(
            in_image.contains(&program),
            "`{program}` is run but the image has only {in_image:?}"
        );
    }
}

#[test]
fn the_build_context_keeps_what_the_image_copies() {
    let rules: Vec<String> = read(".dockerignore")
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .map(str::to_owned)
        .collect();
    assert!(
        dockerignored(&rules, "target/debug/waybill") && dockerignored(&rules, "crates/x/target/y")
    );
    let mut sources = Vec::new();
    for line in dockerfile()
        .iter()
        .filter(|line| line.starts_with("COPY ") && !line.contains("--from="))
    {
        let words: Vec<&str> = line
            .split_whitespace()
            .filter(|word| !word.starts_with("--"))
            .collect();
        sources.extend(
            words[1..words.len() - 1]
                .iter()
                .map(|source| source.to_string()),
        );
    }
    let mut files = Vec::new();
    while let Some(source) = sources.pop() {
        let path = root().join(&source);
        assert!(
            path.exists(),
            "the Dockerfile copies {source}, which does not exist"
        );
        if path.is_dir() {
            for entry in std::fs::read_dir(&path).expect("directory") {
                let name = entry
                    .expect("entry")
                    .file_name()
                    .to_string_lossy()
                    .into_owned();
                if name != "target" {
                    sources.push(format!("{source}/{name}"));
                }
            }
        }
        files.push(source);
    }
    let cut: Vec<_> = files
        .iter()
        .filter(|file| dockerignored(&rules, file))
        .collect();
    assert!(
        cut.is_empty(),
        ".dockerignore keeps what the image build copies out: {cut:?}"
    );
}

#[test]
fn the_image_is_built_locked_on_one_debian_release_with_its_configuration() {
    let instructions = dockerfile();
    let build = instructions
        .iter()
        .find(|line| line.contains("cargo build"))
        .expect("a cargo build");
    assert!(
        build.contains("--locked") && build.contains("--release"),
        "{build}"
    );
    let stages: Vec<&String> = instructions
        .iter()
        .filter(|line| line.starts_with("FROM "))
        .collect();
    assert!(
        stages.len() >= 2 && stages.iter().all(|line| line.contains("${DEBIAN_RELEASE}")),
        "builder and runtime must share one Debian release (the binaries link its glibc): {stages:?}"
    );
    let config = compose_service("worker")["environment"][waybill_config::CONFIG_FILE_VARIABLE]
        .as_str()
        .map(str::to_owned);
    let config = config.expect("compose sets WAYBILL_CONFIG");
    let copied = instructions
        .iter()
        .any(|line| line.starts_with("COPY ") && line.ends_with(&format!(" {config}")));
    assert!(copied, "the image has no file at {config}");
}

#[test]
fn compose_runs_the_migrations_before_the_servers() {
    let condition = |service: &str, dependency: &str| {
        compose_service(service)["depends_on"][dependency]["condition"]
            .as_str()
            .map(str::to_owned)
    };
    for dependency in ["postgres", "rabbitmq"] {
        assert_eq!(
            condition("migrate", dependency).as_deref(),
            Some("service_healthy"),
            "migrate waits for {dependency}"
        );
    }
    for server in ["ingress", "worker"] {
        assert_eq!(
            condition(server, "migrate").as_deref(),
            Some("service_completed_successfully"),
            "{server} waits for migrate"
        );
    }
    assert_eq!(
        compose_service("migrate")["restart"].as_str(),
        Some("no"),
        "migrate is a one-shot"
    );
    let compose = yaml("docker-compose.yml").remove(0);
    for (name, service) in compose["services"].as_hash().into_iter().flatten() {
        for volume in strings(&service["volumes"]) {
            let source = volume.split(':').next().unwrap_or_default();
            if source.starts_with("./") {
                assert!(
                    root().join(source).exists(),
                    "{name:?} mounts {source}, which does not exist"
                );
            } else {
                assert!(
                    !compose["volumes"][source].is_badvalue(),
                    "{name:?} uses undeclared volume {source}"
                );
            }
        }
    }
}
