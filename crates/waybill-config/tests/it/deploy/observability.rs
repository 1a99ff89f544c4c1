//! The compose `observability` profile: the collector's pipelines, what Prometheus scrapes and
//! where Grafana finds the dashboard, against the compose services that exist. No tool checks
//! these without starting the containers.

use std::collections::BTreeSet;

use yaml_rust2::Yaml;

use super::deployed_settings;
use super::files::*;

/// `host:port` of an address or URL.
fn host_port(address: &str) -> (String, String) {
    let rest = address.split("://").last().unwrap_or(address);
    let authority = rest.split('/').next().unwrap_or(rest);
    let (host, port) = authority.rsplit_once(':').unwrap_or((authority, ""));
    (host.to_owned(), port.to_owned())
}

fn services() -> Yaml {
    yaml("docker-compose.yml").remove(0)["services"].clone()
}

/// Where a service mounts a repository path (`./path:/target[:ro]`).
fn mount_of(service: &Yaml, source: &str) -> Option<String> {
    strings(&service["volumes"]).into_iter().find_map(|volume| {
        let mut parts = volume.split(':');
        (parts.next() == Some(source)).then(|| parts.next().unwrap_or_default().to_owned())
    })
}

#[test]
fn the_collector_pipelines_use_components_it_defines() {
    let config = yaml("deploy/compose/otel-collector.yaml").remove(0);
    let pipelines = config["service"]["pipelines"].as_hash().expect("pipelines");
    assert!(
        pipelines.keys().any(|name| name.as_str() == Some("traces")),
        "a traces pipeline"
    );
    for (name, pipeline) in pipelines {
        for section in ["receivers", "processors", "exporters"] {
            for component in strings(&pipeline[section]) {
                assert!(
                    !config[section][component.as_str()].is_badvalue(),
                    "{name:?} uses undefined {section} {component}"
                );
            }
        }
    }
    for protocol in ["grpc", "http"] {
        let endpoint = config["receivers"]["otlp"]["protocols"][protocol]["endpoint"]
            .as_str()
            .unwrap_or_default();
        assert!(
            endpoint.starts_with("0.0.0.0:"),
            "otlp {protocol} must listen for the other containers: {endpoint}"
        );
    }
    let services = services();
    for (name, exporter) in config["exporters"].as_hash().into_iter().flatten() {
        if let Some(endpoint) = exporter["endpoint"].as_str() {
            let (host, _) = host_port(endpoint);
            assert!(
                !services[host.as_str()].is_badvalue(),
                "exporter {name:?} sends to {host}, no compose service"
            );
        }
    }
    let http_port = host_port(
        config["receivers"]["otlp"]["protocols"]["http"]["endpoint"]
            .as_str()
            .unwrap_or_default(),
    )
    .1;
    let overrides = yaml("deploy/compose/observability.yml").remove(0);
    for service in ["ingress", "worker"] {
        let endpoint = overrides["services"][service]["environment"]["OTEL_EXPORTER_OTLP_ENDPOINT"]
            .as_str()
            .unwrap_or_default();
        assert_eq!(
            host_port(endpoint),
            ("otel-collector".to_owned(), http_port.clone()),
            "{service}: OTLP/HTTP endpoint"
        );
        assert!(
            !services[service].is_badvalue(),
            "the override names compose service {service}"
        );
    }
}

#[test]
fn prometheus_scrapes_both_servers_and_grafana_finds_the_dashboard() {
    let settings = deployed_settings();
    let scrape = yaml("deploy/compose/prometheus.yml").remove(0);
    let targets: BTreeSet<String> = scrape["scrape_configs"]
        .as_vec()
        .into_iter()
        .flatten()
        .flat_map(|job| job["static_configs"].as_vec().cloned().unwrap_or_default())
        .flat_map(|config| strings(&config["targets"]))
        .collect();
    for wanted in [
        format!("ingress:{}", settings.ingress.addr.port()),
        format!("worker:{}", settings.worker.addr.port()),
    ] {
        assert!(
            targets.contains(&wanted),
            "prometheus.yml does not scrape {wanted}: {targets:?}"
        );
    }
    let grafana = &services()["grafana"];
    let dashboards = mount_of(grafana, "./deploy/grafana").expect("grafana mounts deploy/grafana");
    let providers = yaml("deploy/compose/grafana/dashboards.yml").remove(0);
    let paths = providers["providers"]
        .as_vec()
        .into_iter()
        .flatten()
        .filter_map(|p| p["options"]["path"].as_str());
    assert!(
        paths.into_iter().any(|path| path == dashboards),
        "no dashboard provider reads {dashboards}"
    );
    for (file, kind) in [
        ("dashboards.yml", "dashboards"),
        ("datasources.yml", "datasources"),
    ] {
        let target =
            mount_of(grafana, &format!("./deploy/compose/grafana/{file}")).unwrap_or_default();
        assert!(
            target.starts_with(&format!("/etc/grafana/provisioning/{kind}/")),
            "{file} mounted at {target:?}"
        );
    }
}
