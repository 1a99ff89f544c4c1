//! The deployment files (`docker-compose.yml`, `deploy/`) against what no standard tool knows:
//! the real configuration struct, the broker topology, the workspace's binaries and the metric
//! names the code exports. The tools' own checks (schemas, kustomize, hadolint, promtool) are
//! `scripts/check-deploy.sh`.

mod files;

use std::collections::BTreeSet;

use files::*;
use waybill_config::{CONFIG_FILE_VARIABLE, ENVIRONMENT, ExposeSecret, Settings};
use yaml_rust2::Yaml;

/// Variables read by the telemetry rather than the configuration: `RUST_LOG` (the log filter)
/// and the OpenTelemetry SDK's standard ones (docs/operations.md, traces).
const TELEMETRY_VARIABLES: &[&str] = &[
    "RUST_LOG",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_EXPORTER_OTLP_PROTOCOL",
    "OTEL_SERVICE_NAME",
    "OTEL_TRACES_SAMPLER",
    "OTEL_TRACES_SAMPLER_ARG",
];

/// The roles both deployments run: (compose service, Kubernetes kind, Kubernetes name).
const ROLES: &[(&str, &str, &str)] = &[
    ("migrate", "Job", "waybill-migrate"),
    ("ingress", "Deployment", "waybill-ingress"),
    ("worker", "Deployment", "waybill-worker"),
];

fn config_variable(name: &str) -> bool {
    name == CONFIG_FILE_VARIABLE || ENVIRONMENT.iter().any(|(variable, _)| *variable == name)
}

/// The configuration the Kubernetes base deploys: the `waybill.toml` of secrets.example.yaml.
fn deployed_settings() -> Settings {
    let secrets = yaml("deploy/k8s/base/secrets.example.yaml");
    let toml = find(&secrets, "Secret", "waybill-config")["stringData"]["waybill.toml"]
        .as_str()
        .expect("waybill-config has a waybill.toml");
    Settings::from_toml_str(toml).expect("the example waybill.toml is a valid configuration")
}

/// The compose services that run the Waybill image, merge keys resolved.
fn compose_services() -> Vec<(String, Yaml)> {
    let compose = yaml("docker-compose.yml").remove(0);
    let image = compose["x-waybill"]["image"].clone();
    compose["services"]
        .as_hash()
        .expect("services")
        .iter()
        .filter(|(_, service)| service["image"] == image)
        .map(|(name, service)| (scalar(name).unwrap_or_default(), service.clone()))
        .collect()
}

fn compose_service(name: &str) -> Yaml {
    compose_services()
        .into_iter()
        .find(|(service, _)| service == name)
        .unwrap_or_else(|| panic!("compose has no Waybill service {name}"))
        .1
}

fn keys(node: &Yaml) -> BTreeSet<String> {
    node.as_hash()
        .into_iter()
        .flatten()
        .filter_map(|(key, _)| scalar(key))
        .collect()
}

/// Every variable name a deployment file sets for a Waybill process, with where.
fn variables_set() -> Vec<(String, String)> {
    let mut found = Vec::new();
    for (name, service) in compose_services() {
        found.extend(
            keys(&service["environment"])
                .into_iter()
                .map(|v| (v, format!("compose {name}"))),
        );
    }
    for (name, service) in yaml("deploy/compose/observability.yml")[0]["services"]
        .as_hash()
        .into_iter()
        .flatten()
    {
        let name = scalar(name).unwrap_or_default();
        found.extend(
            keys(&service["environment"])
                .into_iter()
                .map(|v| (v, format!("observability {name}"))),
        );
    }
    let base = base();
    for document in all(&base, "Deployment")
        .into_iter()
        .chain(all(&base, "Job"))
    {
        let name = document["metadata"]["name"].as_str().unwrap_or_default();
        let names = variables(container(document), &base);
        found.extend(
            names
                .into_iter()
                .map(|v| (v, format!("deploy/k8s/base {name}"))),
        );
    }
    for overlay in std::fs::read_dir(root().join("deploy/k8s/overlays")).expect("overlays") {
        let dir = overlay.expect("overlay").path();
        for file in std::fs::read_dir(&dir).expect("overlay files") {
            let path = file.expect("file").path();
            let relative = path
                .strip_prefix(root())
                .expect("in the repository")
                .to_string_lossy()
                .into_owned();
            for document in yaml(&relative) {
                patched_variables(&document, &relative, &mut found);
            }
        }
    }
    found
}

/// Variables an overlay's patches add: `env` entries, JSON-patch values of an `env` list, and
/// keys a JSON patch adds to a ConfigMap's `data` (the base's environment ConfigMap).
fn patched_variables(node: &Yaml, file: &str, found: &mut Vec<(String, String)>) {
    let path = node["path"].as_str().unwrap_or_default();
    let (list, index) = path.rsplit_once('/').unwrap_or_default();
    if list.ends_with("/env")
        && (index == "-" || index.parse::<usize>().is_ok())
        && let Some(name) = node["value"]["name"].as_str()
    {
        found.push((name.to_owned(), file.to_owned()));
    }
    if let Some(key) = path.strip_prefix("/data/") {
        found.push((key.to_owned(), file.to_owned()));
    }
    if let Some(patch) = node["patch"].as_str() {
        for document in yaml_text(patch, file) {
            patched_variables(&document, file, found);
        }
    }
    for variable in node["env"].as_vec().into_iter().flatten() {
        if let Some(name) = variable["name"].as_str() {
            found.push((name.to_owned(), file.to_owned()));
        }
    }
    let children: Vec<&Yaml> = match node {
        Yaml::Hash(hash) => hash.values().collect(),
        Yaml::Array(items) => items.iter().collect(),
        _ => Vec::new(),
    };
    for child in children {
        patched_variables(child, file, found);
    }
}

#[test]
fn deployments_set_only_variables_waybill_reads() {
    let unknown: Vec<_> = variables_set()
        .into_iter()
        .filter(|(name, _)| !config_variable(name) && !TELEMETRY_VARIABLES.contains(&name.as_str()))
        .collect();
    assert!(
        unknown.is_empty(),
        "set but read by nothing (not in waybill_config::ENVIRONMENT or the telemetry's): {unknown:?}"
    );
}

#[test]
#[allow(
    clippy::result_large_err,
    reason = "figment::Jail's closure returns figment's own error type"
)]
fn every_variable_the_configuration_reads_overrides_its_key() {
    // A sample value per variable; a new variable needs one here.
    let sample = |variable: &str, directory: &str| match variable {
        "DATABASE_URL" => "postgres://sample@db:5432/sample".to_owned(),
        "AMQP_URL" => "amqp://sample@broker:5672/%2f".to_owned(),
        // Wins over AMQP_URL when both are set; its first node is AMQP_URL's here, so the check
        // below finds that value in `bus.url` as well.
        "AMQP_URLS" => "amqp://sample@broker:5672/%2f,amqp://sample@broker-2:5672/%2f".to_owned(),
        "WAYBILL_INGRESS_ADDR" => "127.0.0.1:18080".to_owned(),
        "WAYBILL_WORKER_ADDR" => "127.0.0.1:18081".to_owned(),
        "WAYBILL_LOG_FORMAT" => "json".to_owned(),
        "WAYBILL_PROFILES_DIR" => directory.to_owned(),
        "WAYBILL_BUS_PREFIX" => "sample.".to_owned(),
        other => panic!("give {other} a sample value in this test"),
    };
    figment::Jail::expect_with(|jail| {
        let directory = jail.directory().to_string_lossy().into_owned();
        for (variable, _) in ENVIRONMENT {
            jail.set_env(variable, sample(variable, &directory));
        }
        let settings = Settings::load_from(None, true).map_err(|error| error.to_string())?;
        let loaded = figment::Figment::from(figment::providers::Serialized::defaults(settings));
        for (variable, key) in ENVIRONMENT {
            let value = loaded
                .find_value(key)
                .map_err(|error| format!("{key}: {error}"))?;
            // A list (`bus.urls`) reads as its items joined by commas, as its variable is written.
            let list = value.as_array().map(|items| {
                items
                    .iter()
                    .filter_map(figment::value::Value::as_str)
                    .collect::<Vec<_>>()
                    .join(",")
            });
            let text = value
                .as_str()
                .map(str::to_owned)
                .or(list)
                .unwrap_or_else(|| format!("{value:?}"));
            assert!(
                text.contains(sample(variable, &directory).trim_end_matches('.'))
                    || (*variable == "WAYBILL_LOG_FORMAT" && text.contains("json")),
                "{variable} did not set {key} (it is {text})"
            );
        }
        Ok(())
    });
}

#[test]
fn the_shipped_configuration_files_are_valid() {
    let deployed = deployed_settings();
    assert!(
        deployed.database.url.expose_secret() == Settings::default().database.url.expose_secret()
            && deployed.bus.url.expose_secret() == Settings::default().bus.url.expose_secret(),
        "secrets.example.yaml's waybill.toml must not set URLs: they come from the Secret waybill-secrets"
    );
    let example = Settings::from_toml_str(&read("deploy/waybill.example.toml"))
        .expect("deploy/waybill.example.toml (the image's default) is a valid configuration");
    for (settings, what) in [
        (&deployed, "secrets.example.yaml"),
        (&example, "waybill.example.toml"),
    ] {
        assert_eq!(settings.ingress.addr.port(), 8080, "{what}: ingress.addr");
        assert_eq!(settings.worker.addr.port(), 8081, "{what}: worker.addr");
    }
}

#[test]
fn compose_and_kubernetes_run_the_same_binaries_with_the_same_settings() {
    let base = base();
    for (service, kind, name) in ROLES {
        let compose = compose_service(service);
        let workload = find(&base, kind, name);
        let command = strings(&compose["command"]);
        assert_eq!(
            command,
            strings(&container(workload)["command"]),
            "{service}: command"
        );
        let in_compose: BTreeSet<String> = keys(&compose["environment"])
            .into_iter()
            .filter(|v| config_variable(v))
            .collect();
        let in_kubernetes: BTreeSet<String> = variables(container(workload), &base)
            .into_iter()
            .filter(|v| config_variable(v))
            .collect();
        assert_eq!(
            in_compose, in_kubernetes,
            "{service}: configuration variables"
        );
        assert_eq!(
            in_compose.contains("DATABASE_URL"),
            *service != "ingress",
            "{service}: only the ingress goes without Postgres"
        );
    }
    let config_map = &find(&base, "ConfigMap", "waybill-env")["data"][CONFIG_FILE_VARIABLE];
    let image_env = dockerfile()
        .into_iter()
        .find(|line| line.starts_with("ENV ") && line.contains(CONFIG_FILE_VARIABLE))
        .expect("the Dockerfile sets WAYBILL_CONFIG");
    for path in [
        scalar(config_map),
        scalar(&compose_service("worker")["environment"][CONFIG_FILE_VARIABLE]),
    ] {
        let path = path.expect("WAYBILL_CONFIG is set");
        assert!(
            image_env.contains(&format!("{CONFIG_FILE_VARIABLE}={path}")),
            "{path} vs {image_env}"
        );
    }
}

mod image;
mod metrics;
mod observability;
mod pods;
mod scaling;
mod serving;
