//! What every Waybill pod runs as and reads: the image's own user with nothing to spare, and
//! only Secrets that secrets.example.yaml documents.

use std::collections::{BTreeMap, BTreeSet};

use yaml_rust2::Yaml;

use super::files::*;

/// The numeric user the image's runtime stage ends with.
fn image_user() -> i64 {
    dockerfile()
        .iter()
        .filter_map(|line| line.strip_prefix("USER "))
        .next_back()
        .and_then(|user| user.split(':').next()?.trim().parse().ok())
        .expect("the Dockerfile ends with a numeric USER")
}

fn workloads(documents: &[Yaml]) -> Vec<&Yaml> {
    all(documents, "Deployment")
        .into_iter()
        .chain(all(documents, "Job"))
        .collect()
}

#[test]
fn pods_run_as_the_image_user_with_nothing_to_spare() {
    let user = image_user();
    let base = base();
    for workload in workloads(&base) {
        let name = workload["metadata"]["name"].as_str().unwrap_or_default();
        let pod = &workload["spec"]["template"]["spec"];
        let container = container(workload);
        let security = &container["securityContext"];
        assert_eq!(
            pod["automountServiceAccountToken"].as_bool(),
            Some(false),
            "{name}: Waybill never calls the API server"
        );
        assert_eq!(
            pod["securityContext"]["runAsNonRoot"].as_bool(),
            Some(true),
            "{name}: runAsNonRoot"
        );
        assert_eq!(
            pod["securityContext"]["runAsUser"].as_i64(),
            Some(user),
            "{name}: the image's user"
        );
        assert_eq!(
            pod["securityContext"]["seccompProfile"]["type"].as_str(),
            Some("RuntimeDefault"),
            "{name}: seccomp"
        );
        assert_eq!(
            security["allowPrivilegeEscalation"].as_bool(),
            Some(false),
            "{name}: privilege escalation"
        );
        assert_eq!(
            security["readOnlyRootFilesystem"].as_bool(),
            Some(true),
            "{name}: read-only root"
        );
        assert_eq!(
            strings(&security["capabilities"]["drop"]),
            ["ALL"],
            "{name}: capabilities"
        );
        for kind in ["requests", "limits"] {
            for resource in ["cpu", "memory"] {
                assert!(
                    scalar(&container["resources"][kind][resource]).is_some(),
                    "{name}: {kind}.{resource}"
                );
            }
        }
    }
}

/// The (Secret, key) pairs secrets.example.yaml defines.
fn documented_secrets() -> BTreeMap<String, BTreeSet<String>> {
    yaml("deploy/k8s/base/secrets.example.yaml")
        .iter()
        .map(|secret| {
            let name = secret["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            let keys = secret["stringData"]
                .as_hash()
                .into_iter()
                .flatten()
                .filter_map(|(key, _)| scalar(key));
            (name, keys.collect())
        })
        .collect()
}

#[test]
fn the_base_reads_only_secrets_the_example_documents() {
    let documented = documented_secrets();
    let known = |secret: &str, key: &str| {
        documented
            .get(secret)
            .is_some_and(|keys| keys.contains(key))
    };
    let base = base();
    for workload in workloads(&base) {
        let name = workload["metadata"]["name"].as_str().unwrap_or_default();
        for variable in container(workload)["env"].as_vec().into_iter().flatten() {
            let reference = &variable["valueFrom"]["secretKeyRef"];
            if let (Some(secret), Some(key)) =
                (reference["name"].as_str(), reference["key"].as_str())
            {
                assert!(
                    known(secret, key),
                    "{name} reads {secret}/{key}, which secrets.example.yaml lacks"
                );
            }
        }
        for volume in workload["spec"]["template"]["spec"]["volumes"]
            .as_vec()
            .into_iter()
            .flatten()
        {
            let Some(secret) = volume["secret"]["secretName"].as_str() else {
                continue;
            };
            for item in volume["secret"]["items"].as_vec().into_iter().flatten() {
                let key = item["key"].as_str().unwrap_or_default();
                assert!(
                    known(secret, key),
                    "{name} mounts {secret}/{key}, which secrets.example.yaml lacks"
                );
            }
        }
    }
    for auth in all(&base, "TriggerAuthentication") {
        for reference in auth["spec"]["secretTargetRef"]
            .as_vec()
            .into_iter()
            .flatten()
        {
            let (secret, key) = (
                reference["name"].as_str().unwrap_or_default(),
                reference["key"].as_str().unwrap_or_default(),
            );
            assert!(
                known(secret, key),
                "KEDA reads {secret}/{key}, which secrets.example.yaml lacks"
            );
        }
    }
}

#[test]
fn the_base_is_namespace_free_credential_free_and_labelled() {
    for document in base() {
        let what = format!("{:?} {:?}", document["kind"], document["metadata"]["name"]);
        assert!(
            document["metadata"]["namespace"].is_badvalue(),
            "{what}: the overlay picks the namespace"
        );
        assert_ne!(
            document["kind"].as_str(),
            Some("Secret"),
            "{what}: a base ships no credentials"
        );
        let part_of = &document["metadata"]["labels"]["app.kubernetes.io/part-of"];
        assert_eq!(
            part_of.as_str(),
            Some("waybill"),
            "{what}: app.kubernetes.io/part-of"
        );
    }
    let manifest = yaml("deploy/k8s/base/kustomization.yaml").remove(0);
    let images = manifest["images"].as_vec().cloned().unwrap_or_default();
    assert!(
        images
            .iter()
            .any(|image| image["name"].as_str() == Some("waybill")),
        "overlays set the image by name"
    );
}
