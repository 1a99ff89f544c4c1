#!/usr/bin/env bash
# Checks everything that deploys Waybill, offline and with the ecosystem's own tools (installed
# by scripts/deploy-tools.sh on first use):
#
#   deploy/Dockerfile            hadolint (settings: deploy/hadolint.yaml)
#   docker-compose.yml and       the Compose Specification's JSON schema (check-jsonschema),
#   deploy/compose/              promtool check config for Prometheus' scrape file, shellcheck
#   deploy/k8s/ base + overlays  a real kustomize build of each; built-in kinds against the
#                                Kubernetes schemas of the oldest and newest supported release
#                                (kubernetes-validate --strict), custom resources against the
#                                operators' CRD schemas vendored in deploy/schemas/
#                                (check-jsonschema); an overlay with a namePrefix, to see every
#                                reference follow the rename
#   alert rules, dashboard       promtool check rules, promtool test rules (alerts.test.yaml),
#                                and every dashboard query parsed by promtool
#
# What no tool knows (config keys and variables against the real config struct, compose and
# Kubernetes starting the same binaries, metric names against the code) is the Rust test
# crates/waybill-config/tests/it/deploy/, run by `cargo test`.
#
#   scripts/check-deploy.sh      # exit 0: every check passed; otherwise each failure is shown
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/deploy-tools.sh
source scripts/deploy-tools.sh
ensure_deploy_tools

# The Kubernetes releases the manifests must be valid for: the oldest still supported by the
# cloud providers' long-term channels, and the newest kubernetes-validate knows.
K8S_VERSIONS="${WAYBILL_K8S_VERSIONS:-1.30.0 1.37.0}"
tools="$DEPLOY_VENV/bin"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
passed=0
failed=0

# check DESCRIPTION COMMAND...: runs COMMAND, shows its output only when it fails.
check() {
  local what="$1"
  shift
  if "$@" >"$work/output" 2>&1; then
    passed=$((passed + 1))
    echo "check-deploy: ok: $what" >&2
  else
    failed=$((failed + 1))
    sed 's/^/    /' "$work/output" >&2
    echo "check-deploy: FAILED: $what" >&2
  fi
}

# kubernetes-validate only warns about a kind it has no schema for: a misspelt apiVersion of a
# built-in kind must fail instead. Arguments: the Kubernetes version, then the files.
validate_builtin() {
  "$tools/kubernetes-validate" --strict --quiet -k "$@" 2>&1 | tee "$work/validate"
  [ "${PIPESTATUS[0]}" -eq 0 ] && ! grep -q "Couldn't find schema" "$work/validate"
}

# Builds one kustomization into $work/<name>.yaml and sorts its documents into $work/split:
# built-in kinds by build, custom resources by kind (each must have a vendored schema).
build_kustomization() {
  local dir="$1" rendered
  rendered="$work/$(echo "$dir" | tr '/' '-').yaml"
  check "kustomize build $dir" "${KUSTOMIZE[@]}" "$dir" -o "$rendered"
  [ -s "$rendered" ] || return 0
  check "$dir: a vendored schema for every custom kind" \
    "$tools/python" scripts/deploy-manifests.py split "$rendered" "$work/split"
}

# A namePrefix must reach every reference (kustomizeconfig.yaml teaches kustomize KEDA's):
# no name of a base resource may be left unprefixed. The Secrets are not in the base.
check_name_prefix() {
  local overlay="$work/renamed"
  mkdir -p "$overlay"
  printf 'apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nnamePrefix: renamed-\nresources:\n  - %s\n' \
    "$(realpath --relative-to="$overlay" deploy/k8s/base)" >"$overlay/kustomization.yaml"
  "${KUSTOMIZE[@]}" "$overlay" -o "$overlay/out.yaml" || return 1
  if grep -nE '^ *(- )?(name|secretName|serviceAccountName): waybill(-[a-z-]+)?$' "$overlay/out.yaml" |
    grep -vE ': waybill-(secrets|config)$'; then
    echo "the names above did not follow the namePrefix"
    return 1
  fi
}

# The alert rules (the PrometheusRule's groups) and their unit tests, side by side as promtool
# wants them.
check_alert_rules() {
  local rules="$work/rules"
  mkdir -p "$rules"
  "$tools/python" scripts/deploy-manifests.py rules "$work/deploy-k8s-base.yaml" "$rules/alerts.rules.yml" &&
    cp deploy/k8s/base/alerts.test.yaml "$rules/alerts.test.yml" &&
    "$PROMTOOL" check rules "$rules/alerts.rules.yml" &&
    (cd "$rules" && "$PROMTOOL" test rules alerts.test.yml)
}

check_dashboard_queries() {
  "$tools/python" scripts/deploy-manifests.py dashboard-rules deploy/grafana/waybill.json "$work/dashboard.rules.yml" &&
    "$PROMTOOL" check rules "$work/dashboard.rules.yml"
}

check "shellcheck: deploy scripts" "$tools/shellcheck" -x scripts/check-deploy.sh \
  scripts/deploy-tools.sh scripts/rabbitmq-cluster.sh deploy/compose/*.sh
check "hadolint: deploy/Dockerfile" "$tools/hadolint" --config deploy/hadolint.yaml deploy/Dockerfile
check "Compose Specification schema: docker-compose.yml, deploy/compose/observability.yml" \
  "$tools/check-jsonschema" --schemafile deploy/schemas/compose-spec.json \
  docker-compose.yml deploy/compose/observability.yml
check "promtool check config: deploy/compose/prometheus.yml" \
  "$PROMTOOL" check config deploy/compose/prometheus.yml
check "vendored schemas are valid JSON Schema" \
  "$tools/check-jsonschema" --check-metaschema deploy/schemas/compose-spec.json deploy/schemas/*/*.json

# The base and every overlay, each built; then all builds' documents validated together, one
# validator run per Kubernetes version and per custom kind (file names say which build).
mkdir -p "$work/split/builtin" "$work/split/custom"
for dir in deploy/k8s/base deploy/k8s/overlays/*; do
  build_kustomization "${dir%/}"
done
for version in $K8S_VERSIONS; do
  check "built-in kinds of every build and secrets.example.yaml, Kubernetes $version" \
    validate_builtin "$version" "$work"/split/builtin/*.yaml deploy/k8s/base/secrets.example.yaml
done
for schema in "$work"/split/custom/*/*; do
  kind="${schema#"$work"/split/custom/}"
  check "$kind of every build against deploy/schemas" \
    "$tools/check-jsonschema" --schemafile "deploy/schemas/$kind.json" "$schema"/*.yaml
done
check "a namePrefix overlay renames every reference" check_name_prefix
check "promtool: alert rules and their unit tests" check_alert_rules
check "promtool: every query of deploy/grafana/waybill.json parses" check_dashboard_queries

echo "check-deploy: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
