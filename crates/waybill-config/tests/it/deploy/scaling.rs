//! Autoscaling, disruption budgets and spreading — and, in the operators overlay, the broker and
//! database clusters Waybill is wired to.

use std::collections::BTreeSet;

use waybill_bus::Topology;
use yaml_rust2::Yaml;

use super::deployed_settings;
use super::files::*;

fn labels_match(selector: &Yaml, labels: &Yaml) -> bool {
    selector.as_hash().is_some_and(|wanted| {
        wanted
            .iter()
            .all(|(key, value)| &labels[key.as_str().unwrap_or_default()] == value)
    })
}

#[test]
fn keda_scales_the_worker_on_the_topology_queues() {
    let base = base();
    let scaled = find(&base, "ScaledObject", "waybill-worker");
    assert_eq!(
        scaled["spec"]["scaleTargetRef"]["name"].as_str(),
        Some("waybill-worker")
    );
    let topology = Topology::new("");
    let wanted: BTreeSet<String> = [topology.webhooks_queue(), topology.polls_queue()].into();
    let triggers = scaled["spec"]["triggers"].as_vec().expect("triggers");
    let queues: BTreeSet<String> = triggers
        .iter()
        .filter_map(|trigger| trigger["metadata"]["queueName"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(
        queues, wanted,
        "KEDA must count the queues the worker consumes"
    );
    for trigger in triggers {
        assert_eq!(
            trigger["metadata"]["mode"].as_str(),
            Some("QueueLength"),
            "scaled on ready messages"
        );
    }
    // One broker URL in one place: KEDA counts with the worker's own AMQP_URL Secret key.
    let worker_url = container(find(&base, "Deployment", "waybill-worker"))["env"]
        .as_vec()
        .into_iter()
        .flatten()
        .find(|variable| variable["name"].as_str() == Some("AMQP_URL"))
        .map(|variable| variable["valueFrom"]["secretKeyRef"].clone())
        .expect("the worker's AMQP_URL comes from a Secret");
    let auth = find(&base, "TriggerAuthentication", "waybill-rabbitmq");
    let host = auth["spec"]["secretTargetRef"]
        .as_vec()
        .into_iter()
        .flatten()
        .find(|r| r["parameter"].as_str() == Some("host"));
    let host = host.expect("KEDA's host parameter");
    assert_eq!(
        (&host["name"], &host["key"]),
        (&worker_url["name"], &worker_url["key"]),
        "KEDA and the worker use one URL"
    );
    let minimum = scaled["spec"]["minReplicaCount"].as_i64().unwrap_or(0);
    assert!(
        minimum >= 2,
        "two workers at least: the shipments API, the relay, redundancy"
    );
    let hpa = find(&base, "HorizontalPodAutoscaler", "waybill-ingress");
    assert_eq!(
        hpa["spec"]["scaleTargetRef"]["name"].as_str(),
        Some("waybill-ingress")
    );
    assert!(
        hpa["spec"]["minReplicas"].as_i64().unwrap_or(1) >= 2,
        "two ingress replicas at least"
    );
    for deployment in all(&base, "Deployment") {
        assert!(
            deployment["spec"]["replicas"].is_badvalue(),
            "an autoscaler owns the replica count"
        );
    }
}

#[test]
fn every_deployment_has_a_budget_and_spreads_over_nodes_and_zones() {
    let base = base();
    for deployment in all(&base, "Deployment") {
        let name = deployment["metadata"]["name"].as_str().unwrap_or_default();
        let pod_labels = &deployment["spec"]["template"]["metadata"]["labels"];
        let budgets: Vec<&Yaml> = all(&base, "PodDisruptionBudget")
            .into_iter()
            .filter(|budget| labels_match(&budget["spec"]["selector"]["matchLabels"], pod_labels))
            .collect();
        assert_eq!(budgets.len(), 1, "{name}: one PodDisruptionBudget");
        let spec = &budgets[0]["spec"];
        assert!(
            spec["maxUnavailable"].as_i64().unwrap_or(0) >= 1,
            "{name}: the budget must let a drain evict"
        );
        let spread = deployment["spec"]["template"]["spec"]["topologySpreadConstraints"]
            .as_vec()
            .expect("spread");
        let keys: BTreeSet<&str> = spread
            .iter()
            .filter_map(|c| c["topologyKey"].as_str())
            .collect();
        assert!(
            keys.contains("kubernetes.io/hostname") && keys.contains("topology.kubernetes.io/zone"),
            "{name}: {keys:?}"
        );
        for constraint in spread {
            assert!(
                labels_match(&constraint["labelSelector"]["matchLabels"], pod_labels),
                "{name}: spreads other pods"
            );
        }
    }
}

#[test]
fn the_operators_overlay_wires_waybill_to_the_clusters_it_creates() {
    let overlay = kustomization("deploy/k8s/overlays/operators");
    let rabbitmq = all(&overlay, "RabbitmqCluster");
    let postgres = all(&overlay, "Cluster");
    assert_eq!((rabbitmq.len(), postgres.len()), (1, 1));
    let (rabbitmq, postgres) = (rabbitmq[0], postgres[0]);
    let broker = rabbitmq["metadata"]["name"].as_str().unwrap_or_default();
    assert_eq!(
        rabbitmq["spec"]["replicas"].as_i64(),
        Some(3),
        "quorum queues keep a majority with one node down"
    );
    assert!(
        postgres["spec"]["instances"].as_i64().unwrap_or(1) >= 2,
        "a primary and a replica"
    );
    let budget = find(&overlay, "PodDisruptionBudget", broker);
    assert_eq!(budget["spec"]["maxUnavailable"].as_i64(), Some(1));
    assert_eq!(
        budget["spec"]["selector"]["matchLabels"]["app.kubernetes.io/name"].as_str(),
        Some(broker)
    );
    // The operators name their generated Secrets after the cluster: <name>-default-user
    // (RabbitMQ Cluster Operator) and <name>-app (CloudNativePG's owner account).
    let database_secret = format!(
        "{}-app",
        postgres["metadata"]["name"].as_str().unwrap_or_default()
    );
    let broker_secret = format!("{broker}-default-user");
    let dir = "deploy/k8s/overlays/operators";
    let database = read(&format!("{dir}/database-from-operator.yaml"));
    assert!(
        database.contains(&format!("name: {database_secret}")),
        "DATABASE_URL from {database_secret}"
    );
    for file in ["amqp-from-operator.yaml", "keda-from-operator.yaml"] {
        assert!(
            read(&format!("{dir}/{file}")).contains(&format!("name: {broker_secret}")),
            "{file} reads {broker_secret}"
        );
    }
    // Every worker at the KEDA maximum with both its pools full, plus the Job and the CLI, fits.
    let maximum = find(&base(), "ScaledObject", "waybill-worker")["spec"]["maxReplicaCount"]
        .as_i64()
        .unwrap_or(100);
    let database = deployed_settings().database;
    let pools = maximum * i64::from(database.max_connections + database.api_connections) + 10;
    let allowed: i64 = scalar(&postgres["spec"]["postgresql"]["parameters"]["max_connections"])
        .and_then(|text| text.parse().ok())
        .unwrap_or(100);
    assert!(
        allowed >= pools,
        "Postgres max_connections {allowed} < {pools} the workers may open"
    );
}
