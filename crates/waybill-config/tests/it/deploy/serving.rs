//! Where each server listens, how it is probed and how long it gets to stop, against the
//! configuration it is deployed with.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::process::Command;

use super::files::*;
use super::{compose_service, deployed_settings};

/// A Kubernetes container's port by name or number.
fn container_port(container: &yaml_rust2::Yaml, port: &yaml_rust2::Yaml) -> Option<u16> {
    if let Some(number) = port.as_i64() {
        return u16::try_from(number).ok();
    }
    container["ports"]
        .as_vec()?
        .iter()
        .find(|entry| entry["name"].as_str() == port.as_str())
        .and_then(|entry| u16::try_from(entry["containerPort"].as_i64()?).ok())
}

#[test]
fn ports_probes_and_stop_times_follow_the_configuration() {
    let settings = deployed_settings();
    let base = base();
    let exposed: Vec<String> = dockerfile()
        .into_iter()
        .filter_map(|line| line.strip_prefix("EXPOSE ").map(str::to_owned))
        .collect();
    let servers = [
        (
            "ingress",
            "waybill-ingress",
            settings.ingress.addr.port(),
            settings.ingress.shutdown_grace_ms,
        ),
        (
            "worker",
            "waybill-worker",
            settings.worker.addr.port(),
            settings.worker.shutdown_grace_ms,
        ),
    ];
    for (service, name, port, grace_ms) in servers {
        let workload = find(&base, "Deployment", name);
        let container = container(workload);
        for (probe, path) in [
            ("livenessProbe", "/healthz"),
            ("readinessProbe", "/readyz"),
            ("startupProbe", "/healthz"),
        ] {
            let http = &container[probe]["httpGet"];
            assert_eq!(http["path"].as_str(), Some(path), "{name}: {probe}");
            assert_eq!(
                container_port(container, &http["port"]),
                Some(port),
                "{name}: {probe} port"
            );
        }
        let annotations = &workload["spec"]["template"]["metadata"]["annotations"];
        assert_eq!(
            scalar(&annotations["prometheus.io/port"]),
            Some(port.to_string()),
            "{name}: scrape port"
        );
        let pre_stop = strings(&container["lifecycle"]["preStop"]["exec"]["command"]);
        let pre_stop_secs: u64 = pre_stop.last().and_then(|s| s.parse().ok()).unwrap_or(0);
        let termination = workload["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
            .as_i64()
            .unwrap_or(30);
        let needed = pre_stop_secs + grace_ms / 1000 + 5;
        assert!(
            u64::try_from(termination).unwrap_or(0) >= needed,
            "{name}: terminationGracePeriodSeconds {termination} < preStop {pre_stop_secs} s + {service}.shutdown_grace_ms + 5 s"
        );
        let compose = compose_service(service);
        let published = strings(&compose["ports"]);
        assert!(
            published
                .iter()
                .any(|entry| entry.ends_with(&format!(":{port}"))),
            "compose {service}: ports {published:?}"
        );
        let health = strings(&compose["healthcheck"]["test"]);
        assert!(
            health.contains(&port.to_string()) && health.iter().any(|word| word == "/readyz"),
            "compose {service}: {health:?}"
        );
        let stop = compose_seconds(compose["stop_grace_period"].as_str().unwrap_or("10s"));
        assert!(
            stop >= grace_ms / 1000 + 5,
            "compose {service}: stop_grace_period {stop} s < shutdown_grace_ms + 5 s"
        );
        assert!(
            exposed
                .iter()
                .any(|line| line.split_whitespace().any(|p| p == port.to_string())),
            "EXPOSE {port}"
        );
    }
}

/// One HTTP/1.1 exchange per connection: 200 on /readyz, 503 otherwise.
fn serve_readiness(listener: TcpListener) {
    for stream in listener.incoming().take(2).flatten() {
        let mut reader = BufReader::new(&stream);
        let mut request_line = String::new();
        if reader.read_line(&mut request_line).is_err() {
            continue;
        }
        // The rest of the request too: closing with unread input would reset the connection.
        let mut line = String::new();
        while reader.read_line(&mut line).is_ok_and(|read| read > 2) {
            line.clear();
        }
        let status = if request_line.starts_with("GET /readyz ") {
            "200 OK"
        } else {
            "503 Service Unavailable"
        };
        let _ = (&stream).write_all(
            format!("HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        );
    }
}

#[test]
fn the_compose_healthcheck_tells_ready_from_not_ready() {
    let listener = TcpListener::bind("127.0.0.1:0").expect("a local port");
    let port = listener
        .local_addr()
        .expect("its address")
        .port()
        .to_string();
    let server = std::thread::spawn(move || serve_readiness(listener));
    let probe = |port: &str, path: &str| {
        Command::new("bash")
            .arg(root().join("deploy/compose/healthcheck.sh"))
            .args([port, path])
            .output()
            .expect("bash runs")
            .status
            .success()
    };
    assert!(probe(&port, "/readyz"), "a 200 is healthy");
    assert!(!probe(&port, "/down"), "a 503 is not");
    server.join().expect("the server thread");
    let closed = TcpListener::bind("127.0.0.1:0")
        .expect("a port")
        .local_addr()
        .expect("address")
        .port();
    assert!(
        !probe(&closed.to_string(), "/readyz"),
        "a closed port is not"
    );
}
