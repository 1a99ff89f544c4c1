#!/usr/bin/env bash
# Static checks of everything that deploys Waybill — deploy/Dockerfile, .dockerignore,
# docker-compose.yml and deploy/compose/, the Kubernetes base deploy/k8s/, its alert rules and the
# Grafana dashboard deploy/grafana/ — that run offline on a machine WITHOUT a Docker engine or a
# Kubernetes cluster.
#
#   scripts/validate-deploy.sh        # exit 0: no problem found; non-zero: problems, each listed
#
# What it checks:
#   * `docker compose config -q` (or Compose v1's) when installed (needs no engine), for the default
#     stack and for the observability profile merged with deploy/compose/observability.yml;
#   * the Dockerfile: instructions, stages, base images (builder and runtime on the same Debian
#     release, Rust not older than the workspace's rust-version), every COPY source exists and is
#     not cut from the build context by .dockerignore, the workspace members and the files under
#     them reach the builder, the binary names match the workspace's [[bin]] targets, the runtime
#     stage runs as non-root, exposes 8080/8081, has its config file and a valid CMD;
#   * Cargo.lock is current (the image builds with `cargo build --locked`);
#   * docker-compose.yml (with PyYAML, skipped with a notice when it is missing): keys, services,
#     commands against the binaries in the image, depends_on conditions and cycles, healthchecks,
#     ports, URLs pointing at the right services, volumes, profiles; the observability profile:
#     the collector's pipelines and ports, Prometheus' targets, Grafana's provisioning, and the
#     override file's OTLP endpoint against the collector;
#   * deploy/k8s: rendered with `kubectl kustomize` / `kustomize build` when installed and always
#     with a small Python renderer (the two must agree); an overlay with namePrefix (KEDA
#     references follow) and the example overlay of docs/operations.md build; every built-in kind
#     validated against the Kubernetes schemas with kubernetes-validate --strict (pip-installed
#     into target/validate-deploy/ on first use; skipped with a notice when PyPI is unreachable);
#     KEDA's ScaledObject and TriggerAuthentication against the fields KEDA documents; probes,
#     ports, security contexts, resources, grace periods against the configuration's drain times,
#     Secrets and ConfigMaps referenced, queue names against the Rust topology;
#   * the PrometheusRule (structure, metric names, a runbook section per alert in
#     docs/operations.md) and the dashboard (JSON, unique panel ids, layout, the datasource
#     variable, every specified metric shown); with promtool installed, the rules, their unit
#     tests (deploy/k8s/alerts.test.yaml), the dashboard's queries and prometheus.yml;
#   * `waybill config` on the example waybill.toml, when an up-to-date binary is in target/;
#   * deploy/compose/healthcheck.sh against a throw-away local HTTP server (200 / 503 / closed);
#   * shellcheck on the deploy scripts, when shellcheck is installed.
set -euo pipefail
cd "$(dirname "$0")/.."

errors=0
note() { echo "validate-deploy: $*"; }
fail() {
  echo "validate-deploy: error: $*" >&2
  errors=$((errors + 1))
}

for file in deploy/Dockerfile docker-compose.yml .dockerignore deploy/compose/healthcheck.sh \
  deploy/waybill.example.toml Cargo.toml Cargo.lock deploy/compose/observability.yml \
  deploy/compose/otel-collector.yaml deploy/compose/prometheus.yml deploy/k8s/kustomization.yaml \
  deploy/k8s/secrets.example.yaml deploy/grafana/waybill.json docs/operations.md; do
  [ -f "$file" ] || fail "$file is missing"
done
if [ "$errors" -ne 0 ]; then
  exit 1
fi

# --- shell scripts -----------------------------------------------------------------------------
for script in scripts/validate-deploy.sh deploy/compose/*.sh; do
  bash -n "$script" || fail "$script: bash syntax error"
done
[ -x deploy/compose/healthcheck.sh ] || fail "deploy/compose/healthcheck.sh is not executable (git update-index --chmod=+x)"
if command -v shellcheck >/dev/null 2>&1; then
  shellcheck scripts/validate-deploy.sh deploy/compose/*.sh || fail "shellcheck found problems"
else
  note "skip: shellcheck not installed"
fi

# --- docker compose config (the Compose v2 plugin validates without an engine) ------------------
# Twice: the default stack, and the observability profile merged with its override file
# (deploy/compose/observability.yml), exactly as docs/operations.md tells to run it.
observability=(-f deploy/compose/observability.yml --profile observability)
if command -v docker >/dev/null 2>&1 && docker compose version >/dev/null 2>&1; then
  docker compose -f docker-compose.yml config -q || fail "docker compose config rejected docker-compose.yml"
  docker compose -f docker-compose.yml "${observability[@]}" config -q ||
    fail "docker compose config rejected docker-compose.yml + deploy/compose/observability.yml (profile observability)"
elif command -v docker-compose >/dev/null 2>&1 &&
  [[ "$(docker-compose version 2>/dev/null || true)" == *"version 1."* ]]; then
  # Compose v1 (Debian's docker-compose package) validates the same schema, minus the top-level
  # `name:` that only v2 knows: check a copy without it.
  compose_dir="$(mktemp -d)"
  sed '/^name:/d' docker-compose.yml >"$compose_dir/docker-compose.yml"
  docker-compose --project-directory . -f "$compose_dir/docker-compose.yml" config -q ||
    fail "docker-compose (v1) config rejected docker-compose.yml"
  docker-compose --project-directory . -f "$compose_dir/docker-compose.yml" "${observability[@]}" config -q ||
    fail "docker-compose (v1) config rejected docker-compose.yml + deploy/compose/observability.yml (profile observability)"
  rm -rf "$compose_dir"
else
  note "skip: 'docker compose' (v2 plugin) not installed; docker-compose.yml is checked by the Python checks only"
fi

if ! command -v python3 >/dev/null 2>&1; then
  fail "python3 is needed for the Dockerfile and compose checks"
  exit 1
fi

# --- the workspace as cargo sees it ----------------------------------------------------------------
tmp="$(mktemp -d)"
server_pid=''
cleanup() {
  if [ -n "$server_pid" ]; then kill "$server_pid" 2>/dev/null || true; fi
  rm -rf "$tmp"
}
trap cleanup EXIT

metadata="$tmp/metadata.json"
if command -v cargo >/dev/null 2>&1; then
  if ! cargo metadata --no-deps --format-version 1 --offline >"$metadata" 2>"$tmp/metadata.err"; then
    note "warning: cargo metadata failed; reading the manifests directly: $(head -c 400 "$tmp/metadata.err")"
    : >"$metadata"
  fi
  # The image builds with --locked: a stale Cargo.lock fails `docker build`, so fail here first.
  if ! cargo metadata --format-version 1 --locked >/dev/null 2>"$tmp/locked.err"; then
    if grep -Eq "needs to be updated|--locked was passed" "$tmp/locked.err"; then
      fail "Cargo.lock is out of date with the manifests: 'cargo build --locked' in deploy/Dockerfile would fail (run any cargo build or check and commit Cargo.lock)"
    else
      note "warning: could not check Cargo.lock with --locked (offline?): $(head -c 400 "$tmp/locked.err")"
    fi
  fi
else
  note "warning: cargo not installed; reading the manifests directly"
  : >"$metadata"
fi

# --- Dockerfile, .dockerignore and docker-compose.yml ----------------------------------------------
python3 - "$metadata" "$tmp/image.json" <<'PY' || fail "Dockerfile / compose checks failed (see above)"
import glob
import json
import os
import re
import shlex
import subprocess
import sys
from urllib.parse import urlparse

ROOT = os.getcwd()
errors = []
warnings = []


def err(msg):
    errors.append(msg)
    print(f"validate-deploy: error: {msg}", file=sys.stderr)


def warn(msg):
    warnings.append(msg)
    print(f"validate-deploy: warning: {msg}")


try:
    import tomllib
except ImportError:  # Python < 3.11
    tomllib = None

REQUIRED_ROLES = ["waybill-ingress", "waybill-worker", "waybill"]
ROLE_PORTS = {"ingress": ("waybill-ingress", 8080), "worker": ("waybill-worker", 8081)}
DEBIAN_CODENAMES = ["buster", "bullseye", "bookworm", "trixie", "forky", "duke"]


def rel(path):
    return os.path.relpath(path, ROOT).replace(os.sep, "/")


def inside(path, base):
    path, base = path.strip("/"), base.strip("/")
    return base in ("", ".") or path == base or path.startswith(base + "/")


# ============================== workspace ========================================================
def load_toml(path):
    if tomllib is None:
        return None
    with open(path, "rb") as handle:
        return tomllib.load(handle)


workspace = {"members": [], "bins": {}, "path_deps": [], "rust_version": None}
root_manifest = load_toml("Cargo.toml")
if root_manifest is not None:
    workspace["rust_version"] = root_manifest.get("workspace", {}).get("package", {}).get("rust-version")

metadata_text = open(sys.argv[1]).read() if sys.argv[1] and os.path.exists(sys.argv[1]) else ""
if metadata_text.strip():
    metadata = json.loads(metadata_text)
    for package in metadata["packages"]:
        member_dir = rel(os.path.dirname(package["manifest_path"]))
        workspace["members"].append(member_dir)
        for target in package["targets"]:
            if "bin" in target["kind"]:
                workspace["bins"][target["name"]] = package["name"]
        for dep in package["dependencies"]:
            if dep.get("path"):
                workspace["path_deps"].append((package["name"], rel(dep["path"])))
elif root_manifest is not None:
    members = root_manifest.get("workspace", {}).get("members", [])
    for pattern in members:
        for member_dir in sorted(glob.glob(pattern)):
            manifest_path = os.path.join(member_dir, "Cargo.toml")
            if not os.path.isfile(manifest_path):
                continue
            manifest = load_toml(manifest_path)
            workspace["members"].append(rel(member_dir))
            name = manifest.get("package", {}).get("name")
            explicit = manifest.get("bin", [])
            for target in explicit:
                workspace["bins"][target["name"]] = name
            explicit_paths = {os.path.normpath(t.get("path", "")) for t in explicit}
            if manifest.get("package", {}).get("autobins", True):
                if os.path.isfile(os.path.join(member_dir, "src/main.rs")) and "src/main.rs" not in explicit_paths:
                    workspace["bins"].setdefault(name, name)
                for extra in glob.glob(os.path.join(member_dir, "src/bin/*.rs")):
                    workspace["bins"].setdefault(os.path.basename(extra)[:-3], name)
else:
    err("neither cargo metadata nor Python's tomllib is available to read the workspace")

for role in REQUIRED_ROLES:
    if workspace["bins"] and role not in workspace["bins"]:
        err(f"the workspace has no binary named {role!r} (bins: {sorted(workspace['bins'])})")


# ============================== .dockerignore ====================================================
def pattern_regex(pattern):
    """Docker's .dockerignore pattern (Go filepath.Match plus `**`) as a regex."""
    out, i = "", 0
    while i < len(pattern):
        c = pattern[i]
        if c == "*":
            if pattern[i : i + 2] == "**":
                i += 2
                if pattern[i : i + 1] == "/":
                    out += "(?:.*/)?"
                    i += 1
                else:
                    out += ".*"
                continue
            out += "[^/]*"
        elif c == "?":
            out += "[^/]"
        elif c == "[":
            end = pattern.find("]", i + 1)
            if end == -1:
                out += re.escape(c)
            else:
                body = pattern[i + 1 : end]
                if body.startswith("^"):
                    body = "^" + body[1:]
                out += "[" + body.replace("\\", "\\\\") + "]"
                i = end
        elif c == "\\" and i + 1 < len(pattern):
            i += 1
            out += re.escape(pattern[i])
        else:
            out += re.escape(c)
        i += 1
    return re.compile("^" + out + "$")


ignore_rules = []
for raw in open(".dockerignore").read().splitlines():
    line = raw.strip()
    if not line or line.startswith("#"):
        continue
    negate = line.startswith("!")
    if negate:
        line = line[1:].strip()
    line = os.path.normpath(line).replace(os.sep, "/").lstrip("/")
    if line in (".", ""):
        continue
    ignore_rules.append((negate, line, pattern_regex(line)))


def dockerignored(path):
    """True when `path` (relative to the context) is not sent to the builder."""
    parts = path.strip("/").split("/")
    prefixes = ["/".join(parts[: k + 1]) for k in range(len(parts))]
    excluded = False
    for negate, _, regex in ignore_rules:
        if any(regex.match(prefix) for prefix in prefixes):
            excluded = not negate
    return excluded


def context_files(base):
    """Files of the work tree under `base` (tracked or new, not git-ignored)."""
    try:
        out = subprocess.run(
            ["git", "ls-files", "--cached", "--others", "--exclude-standard", "--", base],
            capture_output=True, text=True, check=True,
        ).stdout
        return [f for f in out.splitlines() if os.path.exists(f)]
    except (OSError, subprocess.CalledProcessError):
        files = []
        for dirpath, dirnames, filenames in os.walk(base):
            dirnames[:] = [d for d in dirnames if d not in ("target", ".git")]
            files += [rel(os.path.join(dirpath, f)) for f in filenames]
        return files


# ============================== Dockerfile =======================================================
KNOWN_INSTRUCTIONS = {
    "FROM", "RUN", "CMD", "LABEL", "MAINTAINER", "EXPOSE", "ENV", "ADD", "COPY", "ENTRYPOINT",
    "VOLUME", "USER", "WORKDIR", "ARG", "ONBUILD", "STOPSIGNAL", "HEALTHCHECK", "SHELL",
}


def parse_dockerfile(path):
    text = open(path).read()
    lines = text.splitlines()
    if not lines or not re.match(r"#\s*syntax\s*=", lines[0]):
        if "--mount" in text or "--chmod" in text:
            warn(f"{path}: uses BuildKit flags (--mount/--chmod) without a '# syntax=docker/dockerfile:1' line")
    instructions, buf, start = [], "", None
    for number, line in enumerate(lines, 1):
        stripped = line.strip()
        if stripped.startswith("#") or (not buf and not stripped):
            continue
        if start is None:
            start = number
        if stripped.endswith("\\"):
            buf += stripped[:-1] + " "
            continue
        buf += stripped
        keyword, _, rest = buf.partition(" ")
        instructions.append((start, keyword.upper(), rest.strip()))
        buf, start = "", None
    if buf:
        err(f"{path}:{start}: the last instruction ends in a line continuation")
    return instructions


def substitute(value, variables):
    def repl(match):
        name = match.group(1) or match.group(3)
        default = match.group(2)
        if name in variables and variables[name] not in (None, ""):
            return variables[name]
        return default if default is not None else ""
    return re.sub(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}|\$([A-Za-z_][A-Za-z0-9_]*)", repl, value)


def split_flags(args):
    """`--flag=value ... rest` -> ({flag: value}, rest)."""
    flags = {}
    tokens = args.split()
    while tokens and tokens[0].startswith("--"):
        key, _, value = tokens.pop(0)[2:].partition("=")
        flags[key] = value
    return flags, " ".join(tokens)


def exec_form(args, where):
    if not args.startswith("["):
        return None
    try:
        value = json.loads(args)
    except json.JSONDecodeError as exc:
        err(f"{where}: not valid JSON exec form ({exc}); Docker would run it through a shell")
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        err(f"{where}: exec form must be a JSON array of strings")
        return None
    return value


DOCKERFILE = "deploy/Dockerfile"
instructions = parse_dockerfile(DOCKERFILE)
global_args, stages = {}, []
for number, keyword, args in instructions:
    where = f"{DOCKERFILE}:{number}"
    if keyword not in KNOWN_INSTRUCTIONS:
        err(f"{where}: unknown instruction {keyword}")
        continue
    if keyword == "ARG" and not stages:
        name, _, default = args.partition("=")
        global_args[name.strip()] = default.strip().strip('"')
        continue
    if keyword == "FROM":
        flags, rest = split_flags(args)
        words = rest.split()
        image = substitute(words[0], global_args) if words else ""
        name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
        if len(words) not in (1, 3) or (len(words) == 3 and name is None):
            err(f"{where}: FROM must be 'FROM image [AS name]'")
        if name and any(s["name"] == name for s in stages):
            err(f"{where}: stage name {name!r} used twice")
        stages.append({"name": name, "image": image, "line": number, "instr": [], "args": {}})
        continue
    if not stages:
        err(f"{where}: {keyword} before the first FROM")
        continue
    stages[-1]["instr"].append((number, keyword, args))

if len(stages) < 2:
    err(f"{DOCKERFILE}: expected a multi-stage build (builder + runtime), found {len(stages)} stage(s)")
builder = next((s for s in stages if s["name"] == "builder"), stages[0] if stages else None)
runtime = stages[-1] if stages else None
stage_names = [s["name"] for s in stages]


def codename(image):
    tag = image.partition(":")[2]
    return next((c for c in DEBIAN_CODENAMES if re.search(rf"(^|-){c}($|-)", tag)), None)


if builder and runtime and builder is not runtime:
    if not builder["image"].startswith("rust:"):
        warn(f"{DOCKERFILE}: the builder is {builder['image']}, not an official rust image")
    build_release, run_release = codename(builder["image"]), codename(runtime["image"])
    if not build_release or not run_release:
        err(f"{DOCKERFILE}: pin the Debian release of both stages (builder {builder['image']}, runtime {runtime['image']})")
    elif build_release != run_release:
        err(f"{DOCKERFILE}: builder on {build_release} but runtime on {run_release}: the binaries need the builder's glibc")
    version = re.match(r"rust:(\d+)\.(\d+)", builder["image"])
    wanted = workspace["rust_version"]
    if version and wanted:
        have = (int(version.group(1)), int(version.group(2)))
        need = tuple(int(x) for x in wanted.split(".")[:2])
        if have < need:
            err(f"{DOCKERFILE}: {builder['image']} is older than the workspace's rust-version {wanted}")
    elif not version:
        warn(f"{DOCKERFILE}: the builder image {builder['image']} does not pin a Rust version")

copied_into_builder = []  # context paths the builder receives
built_bins = set()  # names the builder copies out of target/release/
image_files = {}  # absolute path in the runtime image -> where it came from
for stage in stages:
    for number, keyword, args in stage["instr"]:
        where = f"{DOCKERFILE}:{number}"
        if keyword in ("COPY", "ADD"):
            if "<<" in args:
                warn(f"{where}: heredoc {keyword} not checked")
                continue
            flags, rest = split_flags(args)
            words = exec_form(rest, where) if rest.startswith("[") else shlex.split(rest)
            if not words or len(words) < 2:
                err(f"{where}: {keyword} needs at least a source and a destination")
                continue
            sources, dest = words[:-1], words[-1]
            if len(sources) > 1 and not dest.endswith("/"):
                err(f"{where}: several sources need a destination ending in '/'")
            source_stage = flags.get("from")
            if source_stage is not None:
                if source_stage not in stage_names and not re.search(r"[:/]", source_stage) and not source_stage.isdigit():
                    err(f"{where}: --from={source_stage} names no earlier stage ({stage_names})")
                if source_stage in stage_names and stage_names.index(source_stage) >= stages.index(stage):
                    err(f"{where}: --from={source_stage} is not an earlier stage")
            for source in sources:
                if source_stage is None:
                    if re.match(r"^[a-z]+://", source):
                        continue
                    matches = glob.glob(source.lstrip("/")) if any(c in source for c in "*?[") else [source.lstrip("/")]
                    matches = [m for m in matches if os.path.exists(m)]
                    if not matches:
                        err(f"{where}: COPY source {source!r} does not exist in the build context")
                    for match in matches:
                        match = rel(match)
                        if dockerignored(match):
                            err(f"{where}: COPY source {match!r} is excluded by .dockerignore")
                        elif os.path.isdir(match):
                            cut = [f for f in context_files(match) if dockerignored(f)]
                            if cut:
                                err(f"{where}: .dockerignore cuts {len(cut)} source file(s) out of {match}/, e.g. {cut[:3]}")
                        if stage is builder:
                            copied_into_builder.append(match)
                if stage is runtime:
                    name = os.path.basename(source.rstrip("/"))
                    target = dest + name if dest.endswith("/") else dest
                    image_files[os.path.normpath(target)] = (source_stage, source)
        if keyword == "RUN" and stage is builder:
            if "cargo build" in args:
                for flag in ("--release", "--locked"):
                    if flag not in args:
                        err(f"{where}: the image build should run 'cargo build {flag}'")
                if "--mount=type=cache" in args and "target/release/" in args and "cp " not in args:
                    err(f"{where}: target/ is a cache mount: copy the binaries out in the same RUN")
            for name in re.findall(r"target/release/([A-Za-z0-9_.-]+)", args):
                built_bins.add(name)
                if workspace["bins"] and name not in workspace["bins"]:
                    err(f"{where}: target/release/{name} is not a binary of the workspace (bins: {sorted(workspace['bins'])})")

# The builder must receive the whole workspace.
for required in ("Cargo.toml", "Cargo.lock"):
    if required not in copied_into_builder:
        err(f"{DOCKERFILE}: the builder stage does not COPY {required}")
for member in workspace["members"]:
    if not any(inside(member, c) for c in copied_into_builder):
        err(f"{DOCKERFILE}: workspace member {member}/ is not copied into the builder (cargo fails to load the workspace)")
for package, dep_path in workspace["path_deps"]:
    if not any(inside(dep_path, c) for c in copied_into_builder):
        err(f"{DOCKERFILE}: {package} depends on path {dep_path}, which the builder does not receive")

# The runtime stage.
if runtime is not None:
    executables = {os.path.basename(p) for p in image_files if p.startswith("/usr/local/bin/")}
    for path, (source_stage, source) in image_files.items():
        if source_stage is not None and path.startswith("/usr/local/bin/"):
            name = os.path.basename(path)
            if built_bins and name not in built_bins:
                err(f"{DOCKERFILE}: the runtime copies {source} from {source_stage}, but the builder never copies {name} out of target/release/")
    for role in REQUIRED_ROLES:
        if role not in executables:
            err(f"{DOCKERFILE}: the runtime image lacks /usr/local/bin/{role}")
    for name in sorted(set(workspace["bins"]) - executables):
        warn(f"{DOCKERFILE}: workspace binary {name} ({workspace['bins'][name]}) is not in the image")
    env, exposed, user, cmd, entrypoint = {}, set(), None, None, None
    for number, keyword, args in runtime["instr"]:
        where = f"{DOCKERFILE}:{number}"
        if keyword == "ENV":
            words = shlex.split(args)
            if words and "=" not in words[0]:
                env[words[0]] = " ".join(words[1:])
            else:
                for word in words:
                    key, _, value = word.partition("=")
                    env[key] = value
        elif keyword == "EXPOSE":
            exposed |= {int(p.split("/")[0]) for p in args.split()}
        elif keyword == "USER":
            user = args.strip()
        elif keyword == "CMD":
            cmd = exec_form(args, where) or ["<shell form>"]
        elif keyword == "ENTRYPOINT":
            entrypoint = exec_form(args, where) or ["<shell form>"]
    if user is None or user.split(":")[0] in ("root", "0"):
        err(f"{DOCKERFILE}: the runtime stage must set a non-root USER (has {user!r})")
    for port in (8080, 8081):
        if port not in exposed:
            err(f"{DOCKERFILE}: the runtime stage does not EXPOSE {port}")
    if entrypoint:
        warn(f"{DOCKERFILE}: ENTRYPOINT {entrypoint} is set: compose commands are passed to it as arguments")
    if cmd is None:
        err(f"{DOCKERFILE}: the runtime stage has no CMD")
    elif cmd[0] not in executables and not cmd[0].startswith("/"):
        err(f"{DOCKERFILE}: CMD runs {cmd[0]!r}, which is not in /usr/local/bin of the image")
    elif cmd[0] != "waybill-ingress":
        warn(f"{DOCKERFILE}: the default CMD is {cmd}, expected waybill-ingress")
    config = env.get("WAYBILL_CONFIG")
    if not config:
        err(f"{DOCKERFILE}: the runtime stage does not set ENV WAYBILL_CONFIG")
    elif os.path.normpath(config) not in image_files:
        err(f"{DOCKERFILE}: WAYBILL_CONFIG={config} but nothing is copied there")
    if env.get("WAYBILL_LOG_FORMAT") not in ("json", "pretty"):
        err(f"{DOCKERFILE}: WAYBILL_LOG_FORMAT must be json or pretty (is {env.get('WAYBILL_LOG_FORMAT')!r})")
    runtime_user, runtime_env, runtime_exposed = user, env, exposed
else:
    executables = set()
    runtime_user, runtime_env, runtime_exposed = None, {}, set()

# The example config the image ships must at least parse, and agree with the exposed ports.
if tomllib is not None:
    try:
        example = load_toml("deploy/waybill.example.toml")
        for section, port in (("ingress", 8080), ("worker", 8081)):
            addr = example.get(section, {}).get("addr")
            if addr and not addr.endswith(f":{port}"):
                err(f"deploy/waybill.example.toml: {section}.addr = {addr!r}, but the image and compose use port {port}")
    except Exception as exc:  # noqa: BLE001 - any parse error is the finding
        err(f"deploy/waybill.example.toml does not parse as TOML: {exc}")

# ============================== docker-compose.yml ===============================================
try:
    import yaml
except ImportError:
    yaml = None
    print("validate-deploy: skip: PyYAML not installed (pip install pyyaml); docker-compose.yml structure not checked")

SERVICE_KEYS = set("""
annotations attach blkio_config build cap_add cap_drop cgroup cgroup_parent command configs
container_name cpu_count cpu_percent cpu_period cpu_quota cpu_rt_period cpu_rt_runtime cpu_shares
cpus cpuset credential_spec depends_on deploy develop device_cgroup_rules devices dns dns_opt
dns_search domainname entrypoint env_file environment expose extends external_links extra_hosts
gpus group_add healthcheck hostname image init ipc isolation label_file labels links logging
mac_address mem_limit mem_reservation mem_swappiness memswap_limit models network_mode networks
oom_kill_disable oom_score_adj pid pids_limit platform ports post_start pre_stop privileged
profiles provider pull_policy read_only restart runtime scale secrets security_opt shm_size
stdin_open stop_grace_period stop_signal storage_opt sysctls tmpfs tty ulimits use_api_socket
user userns_mode uts volumes volumes_from working_dir
""".split())
TOP_KEYS = {"name", "services", "networks", "volumes", "secrets", "configs", "include", "models"}
HEALTHCHECK_KEYS = {"test", "interval", "timeout", "retries", "start_period", "start_interval", "disable"}
DURATION = re.compile(r"^(\d+(\.\d+)?(us|ms|s|m|h))+$")
CONDITIONS = {"service_started", "service_healthy", "service_completed_successfully"}


def interpolate(value, where):
    """Compose variable interpolation with an empty environment: the defaults must work."""
    if isinstance(value, dict):
        return {k: interpolate(v, f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if not isinstance(value, str):
        return value

    def repl(match):
        whole = match.group(0)
        if whole == "$$":
            return "$"
        name = match.group(1) or match.group(4)
        operator, argument = match.group(2), match.group(3)
        if operator in (":-", "-"):
            return argument
        if operator in (":?", "?"):
            warn(f"docker-compose.yml {where}: requires ${{{name}}} to be set ({argument})")
            return ""
        if operator in (":+", "+"):
            return ""
        warn(f"docker-compose.yml {where}: ${{{name}}} has no default and would be blank")
        return ""

    return re.sub(
        r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?+])([^}]*))?\}|\$([A-Za-z_][A-Za-z0-9_]*)",
        repl,
        value,
    )


def as_list(command):
    if command is None:
        return None
    return shlex.split(command) if isinstance(command, str) else [str(c) for c in command]


def as_env(environment):
    if isinstance(environment, list):
        return dict(item.partition("=")[::2] for item in environment)
    return {k: ("" if v is None else str(v)) for k, v in (environment or {}).items()}


def parse_port(entry, where):
    """-> (host_ip, host_port or None, container_port, protocol)"""
    if isinstance(entry, dict):
        return (entry.get("host_ip", ""), str(entry.get("published", "")) or None,
                int(entry["target"]), entry.get("protocol", "tcp"))
    text = str(entry)
    text, _, protocol = text.partition("/")
    match = re.match(r"^(?:(\[[^\]]+\]|[^:]*):)??(?:(\d+(?:-\d+)?):)?(\d+)$", text)
    if not match:
        err(f"docker-compose.yml {where}: cannot read port mapping {entry!r}")
        return None
    host_ip, host_port, container = match.groups()
    return (host_ip or "", host_port, int(container), protocol or "tcp")


def check_compose(path):
    raw = open(path).read()
    document = yaml.safe_load(raw)
    if not isinstance(document, dict):
        err(f"{path}: not a YAML mapping")
        return
    if "version" in document:
        err(f"{path}: the Compose spec has no top-level 'version' key; remove it")
    for key in document:
        if key not in TOP_KEYS and not key.startswith("x-"):
            err(f"{path}: unknown top-level key {key!r}")
    services = interpolate(document.get("services") or {}, "services")
    declared_volumes = set((document.get("volumes") or {}).keys())
    for name in ("postgres", "rabbitmq", "migrate", "ingress", "worker"):
        if name not in services:
            err(f"{path}: service {name!r} is missing")
    for name, service in services.items():
        for key in service:
            if key not in SERVICE_KEYS and not key.startswith("x-"):
                err(f"{path}: services.{name}: unknown key {key!r}")
        if "image" not in service and "build" not in service:
            err(f"{path}: services.{name} has neither image nor build")

    # --- the Waybill image: one name, one build, binaries that exist -----------------------
    waybill = {n: s for n, s in services.items() if n in ("migrate", "ingress", "worker")}
    images = {s.get("image") for s in waybill.values()}
    if len(images) != 1 or None in images:
        err(f"{path}: migrate, ingress and worker must share one image name (have {sorted(map(str, images))})")
    builds = [json.dumps(s.get("build"), sort_keys=True) for s in waybill.values() if s.get("build")]
    if not builds:
        err(f"{path}: none of migrate/ingress/worker says how to build the image")
    elif len(set(builds)) != 1:
        err(f"{path}: services sharing the image build it differently: {sorted(set(builds))}")
    for name, service in services.items():
        build = service.get("build")
        if build is None:
            continue
        context = build if isinstance(build, str) else build.get("context", ".")
        dockerfile = "Dockerfile" if isinstance(build, str) else build.get("dockerfile", "Dockerfile")
        dockerfile_path = os.path.normpath(os.path.join(context, dockerfile))
        if os.path.normpath(context) != ".":
            err(f"{path}: services.{name}.build.context is {context!r}; the Dockerfile expects the repository root '.'")
        if not os.path.isfile(dockerfile_path):
            err(f"{path}: services.{name}.build.dockerfile {dockerfile_path} does not exist")
        elif dockerfile_path != os.path.normpath(DOCKERFILE):
            warn(f"{path}: services.{name} builds {dockerfile_path}, not {DOCKERFILE} (not checked here)")

    image_name = next(iter(images)) if len(images) == 1 else None
    for name, service in services.items():
        if image_name is None or service.get("image") != image_name:
            continue
        command = as_list(service.get("command"))
        if not command:
            continue
        programs = [command[0]]
        if command[0] in ("sh", "bash") and len(command) >= 3 and command[1] == "-c":
            programs = [seg.split()[0] for seg in re.split(r"&&|\|\||;|\n", command[2]) if seg.split()]
        for program in programs:
            if program.startswith("waybill") and program not in executables:
                err(f"{path}: services.{name} runs {program!r}, which the image does not contain ({sorted(executables)})")

    def command_of(name):
        return as_list(services.get(name, {}).get("command")) or []

    migrate_cmd = command_of("migrate")
    script = migrate_cmd[2] if migrate_cmd[:2] in (["sh", "-c"], ["bash", "-c"]) and len(migrate_cmd) > 2 else " ".join(migrate_cmd)
    m, t = script.find("waybill migrate"), script.find("waybill topology")
    if m < 0 or t < 0 or t < m:
        err(f"{path}: services.migrate must run 'waybill migrate' then 'waybill topology' (runs {migrate_cmd})")
    if "migrate" in services and services["migrate"].get("restart", "no") != "no":
        err(f"{path}: services.migrate.restart must be the string \"no\" (a one-shot; unquoted no is YAML false), is {services['migrate'].get('restart')!r}")
    for service_name, (binary, port) in ROLE_PORTS.items():
        if service_name not in services:
            continue
        if command_of(service_name)[:1] != [binary]:
            err(f"{path}: services.{service_name}.command must run {binary} (runs {command_of(service_name)})")

    # --- depends_on -----------------------------------------------------------------------
    graph = {}
    for name, service in services.items():
        depends = service.get("depends_on") or {}
        if isinstance(depends, list):
            depends = {d: {"condition": "service_started"} for d in depends}
        graph[name] = list(depends)
        for target, spec in depends.items():
            where = f"services.{name}.depends_on.{target}"
            if target not in services:
                err(f"{path}: {where}: no such service")
                continue
            condition = (spec or {}).get("condition", "service_started")
            if condition not in CONDITIONS:
                err(f"{path}: {where}: unknown condition {condition!r}")
            health = services[target].get("healthcheck") or {}
            if condition == "service_healthy" and (not health.get("test") or health.get("disable")):
                err(f"{path}: {where}: waits for service_healthy but {target} has no healthcheck")
            if condition == "service_completed_successfully" and services[target].get("restart", "no") != "no":
                err(f"{path}: {where}: {target} restarts ({services[target].get('restart')}), so it never completes")
            if services[target].get("profiles") and not service.get("profiles"):
                err(f"{path}: {where}: {target} is only in profiles {services[target]['profiles']}, {name} is in every run")
    expected = {
        ("migrate", "postgres"): "service_healthy",
        ("migrate", "rabbitmq"): "service_healthy",
        ("ingress", "migrate"): "service_completed_successfully",
        ("worker", "migrate"): "service_completed_successfully",
    }
    for (name, target), condition in expected.items():
        depends = (services.get(name) or {}).get("depends_on") or {}
        actual = (depends.get(target) or {}).get("condition") if isinstance(depends, dict) else None
        if actual != condition:
            err(f"{path}: services.{name}.depends_on.{target} must have condition {condition} (has {actual})")
    state = {}

    def visit(node, trail):
        if state.get(node) == "done":
            return
        if state.get(node) == "open":
            err(f"{path}: depends_on cycle: {' -> '.join(trail + [node])}")
            return
        state[node] = "open"
        for nxt in graph.get(node, []):
            visit(nxt, trail + [node])
        state[node] = "done"

    for node in graph:
        visit(node, [])

    # --- healthchecks -----------------------------------------------------------------------
    for name, service in services.items():
        health = service.get("healthcheck")
        if not health:
            continue
        for key in health:
            if key not in HEALTHCHECK_KEYS:
                err(f"{path}: services.{name}.healthcheck: unknown key {key!r}")
        for key in ("interval", "timeout", "start_period", "start_interval"):
            if key in health and not DURATION.match(str(health[key])):
                err(f"{path}: services.{name}.healthcheck.{key}: {health[key]!r} is not a duration like 10s")
        test = health.get("test")
        if isinstance(test, list):
            if not test or test[0] not in ("CMD", "CMD-SHELL", "NONE"):
                err(f"{path}: services.{name}.healthcheck.test must start with CMD, CMD-SHELL or NONE")
            words = test[1:] if test[:1] == ["CMD"] else (test[1].split() if len(test) > 1 else [])
        else:
            words = str(test or "").split()
        if service.get("image") == image_name and words:
            if words[0] in ("curl", "wget"):
                err(f"{path}: services.{name}.healthcheck uses {words[0]}, which the runtime image does not have")
            elif words[0].startswith("waybill") and words[0] not in executables:
                err(f"{path}: services.{name}.healthcheck runs {words[0]!r}, which is not in the image")
        if name in ROLE_PORTS:
            port = ROLE_PORTS[name][1]
            if str(port) not in words or not any("/readyz" in w for w in words):
                err(f"{path}: services.{name}.healthcheck must probe /readyz on port {port} (is {test})")
    if "postgres" in services and "pg_isready" not in json.dumps((services["postgres"].get("healthcheck") or {}).get("test")):
        err(f"{path}: services.postgres.healthcheck should run pg_isready")
    if "rabbitmq" in services and "rabbitmq-diagnostics" not in json.dumps((services["rabbitmq"].get("healthcheck") or {}).get("test")):
        err(f"{path}: services.rabbitmq.healthcheck should run rabbitmq-diagnostics")
    for name in ("ingress", "worker"):
        if name in services and not services[name].get("healthcheck"):
            err(f"{path}: services.{name} has no healthcheck")

    # --- ports --------------------------------------------------------------------------------
    published = {}
    container_ports = {}
    for name, service in services.items():
        for i, entry in enumerate(service.get("ports") or []):
            parsed = parse_port(entry, f"services.{name}.ports[{i}]")
            if not parsed:
                continue
            host_ip, host_port, container, protocol = parsed
            container_ports.setdefault(name, set()).add(container)
            if host_port:
                key = (host_port, protocol)
                if key in published:
                    err(f"{path}: host port {host_port}/{protocol} is published by both {published[key]} and {name}")
                published[key] = name
    for name, port in (("ingress", 8080), ("worker", 8081), ("rabbitmq", 5672), ("rabbitmq", 15672)):
        if name in services and port not in container_ports.get(name, set()):
            err(f"{path}: services.{name} does not publish container port {port}")

    # --- environment ------------------------------------------------------------------------
    postgres_env = as_env((services.get("postgres") or {}).get("environment"))
    for name, service in services.items():
        if service.get("image") != image_name:
            continue
        environment = as_env(service.get("environment"))
        database_url = environment.get("DATABASE_URL")
        if not database_url:
            err(f"{path}: services.{name} has no DATABASE_URL")
        else:
            url = urlparse(database_url)
            if url.scheme not in ("postgres", "postgresql") or url.hostname not in services:
                err(f"{path}: services.{name}: DATABASE_URL {database_url!r} must point at a compose service (postgres)")
            if postgres_env.get("POSTGRES_DB", "postgres") != url.path.lstrip("/"):
                err(f"{path}: services.{name}: DATABASE_URL names database {url.path.lstrip('/')!r}, postgres creates {postgres_env.get('POSTGRES_DB')!r}")
            if postgres_env.get("POSTGRES_HOST_AUTH_METHOD") != "trust" and url.password != postgres_env.get("POSTGRES_PASSWORD"):
                err(f"{path}: services.{name}: DATABASE_URL's password does not match POSTGRES_PASSWORD")
        amqp_url = environment.get("AMQP_URL")
        if not amqp_url:
            err(f"{path}: services.{name} has no AMQP_URL")
        elif urlparse(amqp_url).scheme not in ("amqp", "amqps") or urlparse(amqp_url).hostname not in services:
            err(f"{path}: services.{name}: AMQP_URL {amqp_url!r} must point at a compose service (rabbitmq)")
        config = environment.get("WAYBILL_CONFIG")
        if config and os.path.normpath(config) not in image_files:
            mounted = any(str(v).split(":")[1:2] == [config] for v in service.get("volumes") or [])
            if not mounted:
                err(f"{path}: services.{name}: WAYBILL_CONFIG={config} is neither in the image nor mounted")
        log_format = environment.get("WAYBILL_LOG_FORMAT")
        if log_format is not None and log_format not in ("json", "pretty"):
            err(f"{path}: services.{name}: WAYBILL_LOG_FORMAT={log_format!r} (json or pretty)")
    if "postgres" in services and not (postgres_env.get("POSTGRES_PASSWORD") or postgres_env.get("POSTGRES_HOST_AUTH_METHOD")):
        err(f"{path}: services.postgres needs POSTGRES_PASSWORD or POSTGRES_HOST_AUTH_METHOD, or it does not start")

    # --- volumes and durations -----------------------------------------------------------------
    for name, service in services.items():
        for entry in service.get("volumes") or []:
            source = entry.get("source") if isinstance(entry, dict) else str(entry).split(":")[0]
            if not source or ":" not in str(entry) and not isinstance(entry, dict):
                continue
            if source.startswith((".", "/", "~")):
                if not os.path.exists(os.path.expanduser(source)):
                    err(f"{path}: services.{name} mounts {source}, which does not exist")
            elif source not in declared_volumes:
                err(f"{path}: services.{name} uses volume {source!r}, not declared under top-level volumes")
        grace = service.get("stop_grace_period")
        if grace is not None and not DURATION.match(str(grace)):
            err(f"{path}: services.{name}.stop_grace_period {grace!r} is not a duration")
        restart = service.get("restart")
        if restart is not None and not re.match(r"^(no|always|unless-stopped|on-failure(:\d+)?)$", str(restart)):
            err(f"{path}: services.{name}.restart {restart!r} is not no|always|on-failure[:N]|unless-stopped (quote \"no\")")


# ============================== the `observability` profile ======================================
OBSERVABILITY = {
    # service: (what it is, the container ports it must publish)
    "otel-collector": ("OpenTelemetry collector", {4317, 4318}),
    "jaeger": ("Jaeger", {16686}),
    "prometheus": ("Prometheus", {9090}),
    "grafana": ("Grafana", {3000}),
}
OVERRIDE = "deploy/compose/observability.yml"


def mount_target(service, source):
    """Where `service` mounts the host path `source` (normalised), or None."""
    for entry in service.get("volumes") or []:
        if isinstance(entry, dict):
            src, dst = entry.get("source", ""), entry.get("target", "")
        else:
            parts = str(entry).split(":")
            if len(parts) < 2:
                continue
            src, dst = parts[0], parts[1]
        if os.path.normpath(src) == os.path.normpath(source):
            return dst
    return None


def host_port(value):
    """'host:port' or 'scheme://host:port/...' -> (host, port or None)."""
    value = str(value)
    if "://" not in value:
        value = "tcp://" + value
    url = urlparse(value)
    return url.hostname, url.port


def load_yaml_file(path):
    try:
        with open(path) as handle:
            return yaml.safe_load(handle)
    except (OSError, yaml.YAMLError) as exc:
        err(f"{path}: cannot be read as YAML: {exc}")
        return None


def check_observability(path):
    document = yaml.safe_load(open(path).read())
    services = interpolate(document.get("services") or {}, "services")
    for name, (what, ports) in OBSERVABILITY.items():
        service = services.get(name)
        if service is None:
            err(f"{path}: the observability profile needs service {name!r} ({what})")
            continue
        if service.get("profiles") != ["observability"]:
            err(f"{path}: services.{name}.profiles must be [\"observability\"] so a plain `up` does not start it (is {service.get('profiles')})")
        image = str(service.get("image", ""))
        tag = image.rpartition(":")[2] if ":" in image.rpartition("/")[2] else ""
        if not tag or tag == "latest":
            err(f"{path}: services.{name}.image {image!r} should pin a version tag")
        published = set()
        for i, entry in enumerate(service.get("ports") or []):
            parsed = parse_port(entry, f"services.{name}.ports[{i}]")
            if parsed:
                published.add(parsed[2])
                if not parsed[0]:
                    err(f"{path}: services.{name}.ports[{i}] binds every interface; bind to ${{WAYBILL_PUBLISH_ADDR:-127.0.0.1}} like the others")
        for port in sorted(ports - published):
            err(f"{path}: services.{name} does not publish container port {port}")
    profiled = {n for n, s in services.items() if s.get("profiles")}
    # The Waybill services themselves never switch tracing on: only the override file does.
    for name in ("migrate", "ingress", "worker"):
        environment = as_env((services.get(name) or {}).get("environment"))
        if environment.get("OTEL_EXPORTER_OTLP_ENDPOINT"):
            err(f"{path}: services.{name} sets OTEL_EXPORTER_OTLP_ENDPOINT in every run; it belongs in {OVERRIDE}")

    # --- the collector's configuration ---------------------------------------------------------
    collector = services.get("otel-collector") or {}
    config_path = "deploy/compose/otel-collector.yaml"
    target = mount_target(collector, "./" + config_path)
    command = as_list(collector.get("command")) or []
    wanted = next((c.split("=", 1)[1] for c in command if c.startswith("--config=")), "/etc/otelcol-contrib/config.yaml")
    if target is None:
        err(f"{path}: services.otel-collector does not mount ./{config_path}")
    elif os.path.normpath(target) != os.path.normpath(wanted):
        err(f"{path}: services.otel-collector mounts its config at {target} but reads {wanted}")
    config = load_yaml_file(config_path) if os.path.exists(config_path) else None
    if config is None:
        err(f"{config_path} is missing or empty")
        config = {}
    sections = {k: (config.get(k) or {}) for k in ("receivers", "processors", "exporters", "extensions", "connectors")}
    pipelines = ((config.get("service") or {}).get("pipelines")) or {}
    if "traces" not in pipelines:
        err(f"{config_path}: service.pipelines has no traces pipeline")
    for pipeline_name, pipeline in pipelines.items():
        for kind in ("receivers", "processors", "exporters"):
            for component in (pipeline or {}).get(kind) or []:
                if component not in sections[kind] and component not in sections["connectors"]:
                    err(f"{config_path}: pipeline {pipeline_name} uses {kind[:-1]} {component!r}, which is not defined under {kind}")
        if not (pipeline or {}).get("receivers") or not (pipeline or {}).get("exporters"):
            err(f"{config_path}: pipeline {pipeline_name} needs receivers and exporters")
    for extension in ((config.get("service") or {}).get("extensions")) or []:
        if extension not in sections["extensions"]:
            err(f"{config_path}: service.extensions names {extension!r}, which is not defined under extensions")
    receiver_ports = {}
    protocols = ((sections["receivers"].get("otlp") or {}).get("protocols")) or {}
    for protocol, default_port in (("grpc", 4317), ("http", 4318)):
        endpoint = (protocols.get(protocol) or {}).get("endpoint")
        if protocol not in protocols:
            err(f"{config_path}: receivers.otlp.protocols.{protocol} is missing")
            continue
        if not endpoint:
            err(f"{config_path}: receivers.otlp.protocols.{protocol}.endpoint must be set to 0.0.0.0:{default_port} (the default binds localhost only)")
            continue
        host, port = host_port(endpoint)
        if host not in ("0.0.0.0", "::", ""):
            err(f"{config_path}: receivers.otlp.protocols.{protocol} listens on {host}, unreachable from the other containers")
        receiver_ports[protocol] = port
    for name, exporter in sections["exporters"].items():
        endpoint = (exporter or {}).get("endpoint")
        if not endpoint:
            continue
        host, port = host_port(endpoint)
        if host not in services:
            err(f"{config_path}: exporters.{name} sends to {host!r}, which is no compose service")
        elif host in profiled and services[host].get("profiles") != collector.get("profiles"):
            err(f"{config_path}: exporters.{name} sends to {host}, which is in another profile")
        if name.split("/")[0] == "otlp" and port != 4317:
            err(f"{config_path}: exporters.{name} is OTLP/gRPC; {host} receives it on 4317, not {port}")

    # --- Prometheus ------------------------------------------------------------------------------
    prometheus = services.get("prometheus") or {}
    prometheus_config = "deploy/compose/prometheus.yml"
    target = mount_target(prometheus, "./" + prometheus_config)
    command = as_list(prometheus.get("command")) or []
    wanted = next((c.split("=", 1)[1] for c in command if c.startswith("--config.file=")), "/etc/prometheus/prometheus.yml")
    if target is None or os.path.normpath(target) != os.path.normpath(wanted):
        err(f"{path}: services.prometheus must mount ./{prometheus_config} at {wanted} (mounts it at {target})")
    scrape = load_yaml_file(prometheus_config) or {}
    targets = {}
    for job in scrape.get("scrape_configs") or []:
        for static in job.get("static_configs") or []:
            for entry in static.get("targets") or []:
                targets[entry] = job.get("metrics_path", "/metrics")
                host, port = host_port(entry)
                if host not in services and host not in ("localhost", "127.0.0.1"):
                    err(f"{prometheus_config}: job {job.get('job_name')} scrapes {entry}, and {host!r} is no compose service")
    for service_name, (_, port) in ROLE_PORTS.items():
        wanted_target = f"{service_name}:{port}"
        if wanted_target not in targets:
            err(f"{prometheus_config}: does not scrape {wanted_target} (scrapes {sorted(targets)})")
        elif targets[wanted_target] != "/metrics":
            err(f"{prometheus_config}: scrapes {wanted_target} on {targets[wanted_target]}, the services serve /metrics")

    # --- Grafana ---------------------------------------------------------------------------------
    grafana = services.get("grafana") or {}
    dashboards_dir = mount_target(grafana, "./deploy/grafana")
    if dashboards_dir is None:
        err(f"{path}: services.grafana does not mount ./deploy/grafana (the dashboard)")
    provider_file = "deploy/compose/grafana/dashboards.yml"
    datasource_file = "deploy/compose/grafana/datasources.yml"
    for source_file, kind in ((provider_file, "dashboards"), (datasource_file, "datasources")):
        target = mount_target(grafana, "./" + source_file)
        if target is None or not target.startswith(f"/etc/grafana/provisioning/{kind}/"):
            err(f"{path}: services.grafana must mount ./{source_file} under /etc/grafana/provisioning/{kind}/ (mounts it at {target})")
    providers = (load_yaml_file(provider_file) or {}).get("providers") or []
    if dashboards_dir and not any(os.path.normpath((p.get("options") or {}).get("path", "")) == os.path.normpath(dashboards_dir) for p in providers):
        err(f"{provider_file}: no provider reads {dashboards_dir}, where deploy/grafana is mounted")
    for datasource in (load_yaml_file(datasource_file) or {}).get("datasources") or []:
        host, _ = host_port(datasource.get("url", ""))
        if host not in services:
            err(f"{datasource_file}: datasource {datasource.get('name')} points at {host!r}, which is no compose service")
    home = as_env(grafana.get("environment")).get("GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH")
    if home and dashboards_dir and not os.path.exists(os.path.join("deploy/grafana", os.path.relpath(home, dashboards_dir))):
        err(f"{path}: GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH={home} is no file of deploy/grafana")

    # --- the override file that switches tracing on --------------------------------------------
    override = load_yaml_file(OVERRIDE) or {}
    for key in override:
        if key != "services":
            err(f"{OVERRIDE}: unexpected top-level key {key!r} (an override of services only)")
    override_services = override.get("services") or {}
    for name, service in override_services.items():
        if name not in services:
            err(f"{OVERRIDE}: services.{name} does not exist in {path}")
            continue
        for key in service:
            if key not in SERVICE_KEYS:
                err(f"{OVERRIDE}: services.{name}: unknown key {key!r}")
        depends = service.get("depends_on") or {}
        for dependency in depends:
            if dependency not in services:
                err(f"{OVERRIDE}: services.{name}.depends_on.{dependency}: no such service")
    for name, (binary, _) in ROLE_PORTS.items():
        environment = as_env((override_services.get(name) or {}).get("environment"))
        endpoint = environment.get("OTEL_EXPORTER_OTLP_ENDPOINT")
        if not endpoint:
            err(f"{OVERRIDE}: services.{name} does not set OTEL_EXPORTER_OTLP_ENDPOINT")
            continue
        host, port = host_port(endpoint)
        if host != "otel-collector":
            err(f"{OVERRIDE}: services.{name}: OTEL_EXPORTER_OTLP_ENDPOINT points at {host!r}, not the otel-collector service")
        protocol = environment.get("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
        expected_port = receiver_ports.get("grpc" if protocol == "grpc" else "http")
        if protocol not in ("grpc", "http/protobuf", "http/json"):
            err(f"{OVERRIDE}: services.{name}: OTEL_EXPORTER_OTLP_PROTOCOL={protocol!r} (grpc, http/protobuf or http/json)")
        elif expected_port and port != expected_port:
            err(f"{OVERRIDE}: services.{name}: {protocol} goes to the collector's port {expected_port}, not {port}")
        if not endpoint.startswith("http://"):
            err(f"{OVERRIDE}: services.{name}: OTEL_EXPORTER_OTLP_ENDPOINT must be an http:// URL (is {endpoint!r})")
        if environment.get("OTEL_SERVICE_NAME") not in (None, binary):
            err(f"{OVERRIDE}: services.{name}: OTEL_SERVICE_NAME should be {binary}")


if yaml is not None:
    check_compose("docker-compose.yml")
    check_observability("docker-compose.yml")

# What the Kubernetes checks (a later step) need to know of the image.
with open(sys.argv[2], "w") as handle:
    json.dump({
        "executables": sorted(executables),
        "user": runtime_user,
        "config": runtime_env.get("WAYBILL_CONFIG"),
        "exposed": sorted(runtime_exposed),
    }, handle)

print(f"validate-deploy: Dockerfile and compose checks: {len(errors)} error(s), {len(warnings)} warning(s)")
sys.exit(1 if errors else 0)
PY

# --- Kubernetes manifests, alert rules and the Grafana dashboard (deploy/k8s, deploy/grafana) -----
# 1. Render the kustomize base: `kubectl kustomize` or `kustomize build` when installed, and always
#    a small Python renderer of the subset the base uses (resources + images), compared with the
#    real build when there is one, so that a machine without kubectl checks the same documents.
# 2. Validate every built-in kind against the Kubernetes OpenAPI schemas, offline, with
#    kubernetes-validate (PyPI; it bundles the schemas). Installed into a venv under target/ on
#    first use when PyPI is reachable; skipped with a notice when it cannot be had.
# 3. Structural checks in Python: KEDA ScaledObject / TriggerAuthentication against the fields
#    KEDA documents, the PrometheusRule, and consistency with the image, the configuration, the
#    Rust topology, docs/operations.md and the dashboard.
# 4. promtool (Debian's `prometheus` package), when installed: the alert rules and the
#    dashboard's queries parse, the alert unit tests pass, prometheus.yml is valid.
k8s_dir=deploy/k8s
K8S_VERSIONS="${WAYBILL_K8S_VERSIONS:-1.30.0 1.37.0}"
KUBERNETES_VALIDATE_VERSION=1.37.0
rendered=''
if command -v kubectl >/dev/null 2>&1 && kubectl kustomize --help >/dev/null 2>&1; then
  kustomize_cmd=(kubectl kustomize)
elif command -v kustomize >/dev/null 2>&1; then
  kustomize_cmd=(kustomize build)
else
  kustomize_cmd=()
  note "skip: neither kubectl nor kustomize installed; the base is rendered by the Python renderer only"
fi
if [ "${#kustomize_cmd[@]}" -gt 0 ]; then
  if "${kustomize_cmd[@]}" "$k8s_dir" >"$tmp/k8s.yaml" 2>"$tmp/kustomize.err"; then
    rendered="$tmp/k8s.yaml"
    # An overlay that renames everything: the KEDA references must follow (kustomizeconfig.yaml).
    mkdir -p "$tmp/overlay"
    overlay_base="$(python3 -c 'import os, sys; print(os.path.relpath(sys.argv[1], sys.argv[2]))' "$PWD/$k8s_dir" "$tmp/overlay")"
    printf 'apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nnamespace: overlay-check\nnamePrefix: overlay-\nresources:\n  - %s\n' \
      "$overlay_base" >"$tmp/overlay/kustomization.yaml"
    "${kustomize_cmd[@]}" "$tmp/overlay" >"$tmp/overlay.yaml" 2>"$tmp/overlay.err" ||
      fail "${kustomize_cmd[*]}: an overlay of $k8s_dir with namePrefix does not build: $(head -c 600 "$tmp/overlay.err")"
    # The example overlay of docs/operations.md (the YAML block after its marker comment) must
    # build too, with its `resources` pointed at this base.
    mkdir -p "$tmp/example"
    if python3 - "$overlay_base" "$tmp/example/kustomization.yaml" <<'PY'; then
import re
import sys

text = open("docs/operations.md").read()
match = re.search(r"<!-- validate-deploy: example overlay -->\s*```yaml\n(.*?)```", text, re.S)
if not match:
    sys.exit("docs/operations.md: no ```yaml block after '<!-- validate-deploy: example overlay -->'")
body = re.sub(r"(?m)^resources:\n(  - .*\n)+", f"resources:\n  - {sys.argv[1]}\n", match.group(1))
open(sys.argv[2], "w").write(body)
PY
      "${kustomize_cmd[@]}" "$tmp/example" >"$tmp/example.yaml" 2>"$tmp/example.err" ||
        fail "docs/operations.md: the example overlay does not build: $(head -c 600 "$tmp/example.err")"
    else
      fail "docs/operations.md: the example overlay is missing"
    fi
  else
    fail "${kustomize_cmd[*]} $k8s_dir failed: $(head -c 800 "$tmp/kustomize.err")"
  fi
fi

# kubernetes-validate: an installed one, the venv under target/, or a fresh install into it.
kv_venv="target/validate-deploy/kubernetes-validate-$KUBERNETES_VALIDATE_VERSION"
kv=''
if [ -x "$kv_venv/bin/kubernetes-validate" ]; then
  kv="$kv_venv/bin/kubernetes-validate"
elif command -v kubernetes-validate >/dev/null 2>&1; then
  kv="$(command -v kubernetes-validate)"
elif python3 -m venv "$kv_venv" >"$tmp/venv.log" 2>&1 &&
  timeout 300 "$kv_venv/bin/python" -m pip install --quiet --disable-pip-version-check \
    "kubernetes-validate==$KUBERNETES_VALIDATE_VERSION" >"$tmp/pip.log" 2>&1; then
  kv="$kv_venv/bin/kubernetes-validate"
  note "installed kubernetes-validate $KUBERNETES_VALIDATE_VERSION into $kv_venv"
else
  rm -rf "$kv_venv"
  note "skip: kubernetes-validate is not installed and could not be installed from PyPI (offline?); Kubernetes schemas not checked: $(tail -n 1 "$tmp/pip.log" 2>/dev/null || tail -n 1 "$tmp/venv.log")"
fi
# The venv has PyYAML too: use its Python for the structural checks when the system one lacks it.
k8s_python=python3
if ! python3 -c 'import yaml' >/dev/null 2>&1 && [ -n "$kv" ] && [ -x "$(dirname "$kv")/python" ]; then
  k8s_python="$(dirname "$kv")/python"
fi

if ! "$k8s_python" -c 'import yaml' >/dev/null 2>&1; then
  note "skip: PyYAML not installed (pip install pyyaml); deploy/k8s, alerts and dashboard structure not checked"
else
  "$k8s_python" - "$k8s_dir" "$tmp/image.json" "$rendered" "$tmp/overlay.yaml" "$tmp" <<'PY' ||
import json
import os
import re
import sys

import yaml

try:
    import tomllib
except ImportError:  # Python < 3.11
    tomllib = None

K8S_DIR, IMAGE_FACTS, RENDERED, OVERLAY, OUT = sys.argv[1:6]
KUSTOMIZATION = os.path.join(K8S_DIR, "kustomization.yaml")
SECRETS_EXAMPLE = os.path.join(K8S_DIR, "secrets.example.yaml")
ALERT_TESTS = os.path.join(K8S_DIR, "alerts.test.yaml")
DASHBOARD = "deploy/grafana/waybill.json"
OPERATIONS = "docs/operations.md"
CONFIG_DOC = "docs/configuration.md"
TOPOLOGY_RS = "crates/waybill-bus/src/topology.rs"
errors, warnings = [], []


def err(msg):
    errors.append(msg)
    print(f"validate-deploy: error: {msg}", file=sys.stderr)


def warn(msg):
    warnings.append(msg)
    print(f"validate-deploy: warning: {msg}")


def load_all(path):
    with open(path) as handle:
        return [d for d in yaml.safe_load_all(handle) if d is not None]


# Which kinds the base may contain (apiVersion, kind). A typo in an apiVersion would otherwise
# only be a "no schema found" warning of kubernetes-validate.
BUILTIN = {
    ("v1", "ServiceAccount"), ("v1", "ConfigMap"), ("v1", "Service"), ("apps/v1", "Deployment"),
    ("batch/v1", "Job"), ("autoscaling/v2", "HorizontalPodAutoscaler"), ("policy/v1", "PodDisruptionBudget"),
}
CUSTOM = {
    ("keda.sh/v1alpha1", "ScaledObject"), ("keda.sh/v1alpha1", "TriggerAuthentication"),
    ("monitoring.coreos.com/v1", "PrometheusRule"),
}
ROLES = {
    # Deployment: (container command, port, config section, env override of the address)
    "waybill-ingress": (["waybill-ingress"], 8080, "ingress", "WAYBILL_INGRESS_ADDR"),
    "waybill-worker": (["waybill-worker"], 8081, "worker", "WAYBILL_WORKER_ADDR"),
}
MIGRATE_JOB = "waybill-migrate"
POD_OWNERS = ("Deployment", "Job")

# ============================== render (the subset of kustomize the base uses) ===================
KUSTOMIZATION_KEYS = {"apiVersion", "kind", "resources", "images", "configurations"}


def split_image(image):
    """'registry:5000/name:tag@sha256:…' -> (name, tag, digest)."""
    name, digest = (image.split("@", 1) + [None])[:2]
    last = name.rpartition("/")[2]
    tag = None
    if ":" in last:
        name, tag = name.rsplit(":", 1)
    return name, tag, digest


def pod_specs(document):
    spec = document.get("spec") or {}
    if document.get("kind") in ("Deployment", "Job", "StatefulSet", "DaemonSet", "ReplicaSet"):
        yield (spec.get("template") or {}).get("spec") or {}
    elif document.get("kind") == "CronJob":
        yield (((spec.get("jobTemplate") or {}).get("spec") or {}).get("template") or {}).get("spec") or {}


def containers_of(pod_spec):
    return (pod_spec.get("initContainers") or []) + (pod_spec.get("containers") or [])


def python_render(kustomization):
    documents = []
    for key in kustomization:
        if key not in KUSTOMIZATION_KEYS:
            err(f"{KUSTOMIZATION}: key {key!r} is beyond what the offline renderer of this script supports "
                f"({sorted(KUSTOMIZATION_KEYS)}); keep the base simple or extend the renderer")
    for resource in kustomization.get("resources") or []:
        path = os.path.join(K8S_DIR, resource)
        if not os.path.isfile(path):
            err(f"{KUSTOMIZATION}: resource {resource} is not a file of {K8S_DIR}/ (directories and URLs are not supported here)")
            continue
        documents += load_all(path)
    for image in kustomization.get("images") or []:
        for document in documents:
            for pod_spec in pod_specs(document):
                for container in containers_of(pod_spec):
                    name, tag, digest = split_image(container.get("image", ""))
                    if name != image.get("name"):
                        continue
                    name = image.get("newName", name)
                    if image.get("digest"):
                        container["image"] = f"{name}@{image['digest']}"
                    else:
                        new_tag = image.get("newTag", tag)
                        container["image"] = f"{name}:{new_tag}" if new_tag else name
    return documents


kustomization = yaml.safe_load(open(KUSTOMIZATION)) or {}
if kustomization.get("namespace"):
    err(f"{KUSTOMIZATION}: sets namespace {kustomization['namespace']!r}; the base must be namespace-agnostic (set it in an overlay)")
for config_file in kustomization.get("configurations") or []:
    if not os.path.isfile(os.path.join(K8S_DIR, config_file)):
        err(f"{KUSTOMIZATION}: configurations entry {config_file} does not exist")
python_documents = python_render(kustomization)
if RENDERED and os.path.exists(RENDERED):
    documents = load_all(RENDERED)

    def keyed(docs):
        return {(d.get("kind"), (d.get("metadata") or {}).get("name")): d for d in docs}

    real, ours = keyed(documents), keyed(python_documents)
    if set(real) != set(ours):
        err(f"the Python renderer and kustomize disagree on the resources: only kustomize {sorted(set(real) - set(ours))}, only Python {sorted(set(ours) - set(real))}")
    for key in sorted(set(real) & set(ours)):
        if json.dumps(real[key], sort_keys=True) != json.dumps(ours[key], sort_keys=True):
            err(f"the Python renderer and kustomize render {key[0]}/{key[1]} differently: extend the renderer in scripts/validate-deploy.sh")
else:
    documents = python_documents

# ============================== inputs beside the base ===========================================
image = json.load(open(IMAGE_FACTS)) if os.path.exists(IMAGE_FACTS) else {}
executables = set(image.get("executables") or [])
image_user = str(image.get("user") or "")
image_uid = int(image_user.split(":")[0]) if image_user.split(":")[0].isdigit() else None

secrets = {}  # name -> {key: value}
if os.path.exists(SECRETS_EXAMPLE):
    for document in load_all(SECRETS_EXAMPLE):
        if document.get("kind") != "Secret":
            err(f"{SECRETS_EXAMPLE}: holds a {document.get('kind')}, only Secrets belong there")
            continue
        name = (document.get("metadata") or {}).get("name")
        if (document.get("metadata") or {}).get("namespace"):
            err(f"{SECRETS_EXAMPLE}: Secret {name} names a namespace")
        values = dict(document.get("stringData") or {})
        values.update({k: "<base64>" for k in (document.get("data") or {})})
        secrets[name] = values
else:
    err(f"{SECRETS_EXAMPLE} is missing: it documents the Secrets the base expects")


def config_defaults():
    """The defaults of docs/configuration.md's tables: {section: {key: value}}."""
    defaults, section = {}, None
    for line in open(CONFIG_DOC):
        heading = re.match(r"^##\s+`\[(\w+)\]`", line)
        if heading:
            section = heading.group(1)
            defaults[section] = {}
            continue
        if line.startswith("## "):
            section = None
        row = re.match(r"^\|\s*`(\w+)`\s*\|\s*`?([^`|]*)`?\s*\|", line)
        if section and row:
            key, value = row.group(1), row.group(2).strip().strip('"')
            defaults[section][key] = int(value) if value.isdigit() else value
    return defaults


settings = config_defaults()
example_toml = (secrets.get("waybill-config") or {}).get("waybill.toml")
if example_toml is None:
    err(f"{SECRETS_EXAMPLE}: Secret waybill-config has no key waybill.toml")
elif tomllib is not None:
    with open(os.path.join(OUT, "waybill.toml"), "w") as handle:
        handle.write(example_toml)
    try:
        for section, values in tomllib.loads(example_toml).items():
            if isinstance(values, dict):
                settings.setdefault(section, {}).update(values)
            if section in ("ingress", "worker", "bus", "database") and "url" in (values or {}):
                err(f"{SECRETS_EXAMPLE}: waybill.toml sets {section}.url; URLs come from the Secret waybill-secrets")
    except tomllib.TOMLDecodeError as exc:
        err(f"{SECRETS_EXAMPLE}: waybill.toml does not parse: {exc}")


def topology_queues():
    """Queue names as the Rust topology spells them (no prefix)."""
    text = open(TOPOLOGY_RS).read() if os.path.exists(TOPOLOGY_RS) else ""
    names = {}
    for function in ("webhooks_queue", "polls_queue", "dead_queue"):
        match = re.search(rf"fn {function}\(&self\)[^{{]*\{{\s*format!\(\"\{{\}}([\w.]+)\"", text)
        if match:
            names[function] = match.group(1)
        else:
            err(f"{TOPOLOGY_RS}: cannot find the queue name of Topology::{function}")
    return names


queues = topology_queues()

# ============================== every document ===================================================
by_kind = {}
seen = set()
for document in documents:
    api, kind = document.get("apiVersion"), document.get("kind")
    metadata = document.get("metadata") or {}
    name = metadata.get("name")
    where = f"{K8S_DIR}: {kind}/{name}"
    if (api, kind) not in BUILTIN | CUSTOM:
        err(f"{where}: unexpected apiVersion/kind {api}/{kind} (known: {sorted(BUILTIN | CUSTOM)})")
    if kind == "Secret":
        err(f"{where}: a base ships no Secret (credentials); document it in secrets.example.yaml")
    if not name:
        err(f"{K8S_DIR}: a {kind} has no metadata.name")
    if "namespace" in metadata:
        err(f"{where}: names namespace {metadata['namespace']!r}; the base must be namespace-agnostic")
    if (kind, name) in seen:
        err(f"{where}: defined twice")
    seen.add((kind, name))
    if (metadata.get("labels") or {}).get("app.kubernetes.io/part-of") != "waybill":
        err(f"{where}: label app.kubernetes.io/part-of: waybill is missing")
    by_kind.setdefault(kind, {})[name] = document

deployments = by_kind.get("Deployment", {})
config_maps = by_kind.get("ConfigMap", {})
service_accounts = by_kind.get("ServiceAccount", {})
for name in list(ROLES) + [MIGRATE_JOB]:
    kind = "Job" if name == MIGRATE_JOB else "Deployment"
    if name not in by_kind.get(kind, {}):
        err(f"{K8S_DIR}: {kind} {name} is missing")


def quantity(value, cpu):
    text = str(value)
    units = {"m": 1e-3} if cpu else {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "K": 1e3, "M": 1e6, "G": 1e9, "k": 1e3}
    for suffix, factor in sorted(units.items(), key=lambda kv: -len(kv[0])):
        if text.endswith(suffix):
            return float(text[: -len(suffix)]) * factor
    return float(text)


def env_of(container):
    """{name: ('value', v) | ('secret', name, key) | ('configmap', name, key)} including envFrom."""
    result = {}
    for source in container.get("envFrom") or []:
        if "configMapRef" in source:
            config_map = source["configMapRef"].get("name")
            if config_map not in config_maps:
                err(f"{K8S_DIR}: container {container.get('name')} reads ConfigMap {config_map}, which the base does not define")
                continue
            for key, value in (config_maps[config_map].get("data") or {}).items():
                result[key] = ("value", str(value))
        if "secretRef" in source:
            secret = source["secretRef"].get("name")
            for key in secrets.get(secret, {}):
                result[key] = ("secret", secret, key)
            if secret not in secrets:
                err(f"{K8S_DIR}: container {container.get('name')} reads Secret {secret}, which {SECRETS_EXAMPLE} does not define")
    for variable in container.get("env") or []:
        value_from = variable.get("valueFrom") or {}
        if "secretKeyRef" in value_from:
            ref = value_from["secretKeyRef"]
            result[variable["name"]] = ("secret", ref.get("name"), ref.get("key"))
            if ref.get("key") not in secrets.get(ref.get("name"), {}):
                err(f"{K8S_DIR}: {variable['name']} reads Secret {ref.get('name')} key {ref.get('key')}, which {SECRETS_EXAMPLE} does not define")
        elif "configMapKeyRef" in value_from:
            ref = value_from["configMapKeyRef"]
            result[variable["name"]] = ("configmap", ref.get("name"), ref.get("key"))
            if ref.get("key") not in ((config_maps.get(ref.get("name")) or {}).get("data") or {}):
                err(f"{K8S_DIR}: {variable['name']} reads ConfigMap {ref.get('name')} key {ref.get('key')}, which is not defined")
        else:
            result[variable["name"]] = ("value", str(variable.get("value", "")))
    return result


def pre_stop_seconds(container):
    pre_stop = ((container.get("lifecycle") or {}).get("preStop")) or {}
    if "sleep" in pre_stop:
        return int(pre_stop["sleep"].get("seconds", 0))
    command = ((pre_stop.get("exec") or {}).get("command")) or []
    text = " ".join(str(c) for c in command)
    match = re.search(r"\bsleep\s+(\d+)", text)
    return int(match.group(1)) if match else 0


def resolve_port(container, port):
    if isinstance(port, int):
        return port
    for entry in container.get("ports") or []:
        if entry.get("name") == port:
            return entry.get("containerPort")
    return None


def matches(selector, labels):
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


# ============================== workloads =========================================================
images = set()
for kind in POD_OWNERS:
    for name, document in by_kind.get(kind, {}).items():
        where = f"{K8S_DIR}: {kind}/{name}"
        template = (document.get("spec") or {}).get("template") or {}
        pod = template.get("spec") or {}
        pod_labels = (template.get("metadata") or {}).get("labels") or {}
        annotations = (template.get("metadata") or {}).get("annotations") or {}
        containers = pod.get("containers") or []
        if len(containers) != 1:
            err(f"{where}: expected one container, has {len(containers)}")
            continue
        container = containers[0]
        images.add(container.get("image"))
        # Identity and privileges.
        if pod.get("serviceAccountName") not in service_accounts:
            err(f"{where}: serviceAccountName {pod.get('serviceAccountName')!r} is not a ServiceAccount of the base")
        if pod.get("automountServiceAccountToken") is not False:
            err(f"{where}: automountServiceAccountToken must be false (Waybill never calls the Kubernetes API)")
        pod_security = pod.get("securityContext") or {}
        security = container.get("securityContext") or {}
        if pod_security.get("runAsNonRoot") is not True and security.get("runAsNonRoot") is not True:
            err(f"{where}: runAsNonRoot must be true")
        uid = security.get("runAsUser", pod_security.get("runAsUser"))
        if image_uid is not None and uid != image_uid:
            err(f"{where}: runAsUser is {uid}, the image's USER is {image_user}")
        if ((pod_security.get("seccompProfile") or {}).get("type")) != "RuntimeDefault":
            err(f"{where}: securityContext.seccompProfile.type should be RuntimeDefault")
        if security.get("allowPrivilegeEscalation") is not False:
            err(f"{where}: container securityContext.allowPrivilegeEscalation must be false")
        if security.get("readOnlyRootFilesystem") is not True:
            err(f"{where}: container securityContext.readOnlyRootFilesystem must be true")
        capabilities = security.get("capabilities") or {}
        if "ALL" not in (capabilities.get("drop") or []) or capabilities.get("add"):
            err(f"{where}: container capabilities must drop ALL and add none (has {capabilities})")
        mounts = {m.get("mountPath"): m for m in container.get("volumeMounts") or []}
        volumes = {v.get("name"): v for v in pod.get("volumes") or []}
        for mount in mounts.values():
            if mount.get("name") not in volumes:
                err(f"{where}: volumeMount {mount.get('name')} has no volume")
        tmp = mounts.get("/tmp")
        if tmp is None or "emptyDir" not in (volumes.get(tmp.get("name")) or {}):
            warn(f"{where}: the root filesystem is read-only and /tmp is no emptyDir")
        # Resources.
        resources = container.get("resources") or {}
        for resource in ("cpu", "memory"):
            request = (resources.get("requests") or {}).get(resource)
            limit = (resources.get("limits") or {}).get(resource)
            if request is None or limit is None:
                err(f"{where}: resources.requests and resources.limits need {resource}")
            elif quantity(request, resource == "cpu") > quantity(limit, resource == "cpu"):
                err(f"{where}: {resource} request {request} is above its limit {limit}")
        # Command against the image.
        command = [str(c) for c in (container.get("command") or [])]
        programs = command[:1]
        if command[:2] in (["sh", "-c"], ["bash", "-c"]) and len(command) > 2:
            programs = [seg.split()[0] for seg in re.split(r"&&|\|\||;|\n", command[2]) if seg.split()]
        for program in programs:
            if program.startswith("waybill") and executables and program not in executables:
                err(f"{where}: runs {program!r}, which the image does not contain ({sorted(executables)})")
        # Environment and configuration.
        env = env_of(container)
        config_path = (env.get("WAYBILL_CONFIG") or ("value", image.get("config")))[1]
        if not config_path:
            err(f"{where}: WAYBILL_CONFIG is not set")
        else:
            directory, filename = os.path.split(config_path)
            mount = mounts.get(config_path) or mounts.get(directory)
            volume = volumes.get((mount or {}).get("name")) or {}
            secret_name = (volume.get("secret") or {}).get("secretName")
            if mount is None or secret_name is None:
                err(f"{where}: WAYBILL_CONFIG={config_path} is not mounted from a Secret (the file holds the webhook secrets)")
            else:
                items = (volume.get("secret") or {}).get("items")
                key = mount.get("subPath") if mounts.get(config_path) else filename
                if items:
                    key = next((i.get("key") for i in items if i.get("path") == (mount.get("subPath") or filename)), None)
                if key is None or key not in secrets.get(secret_name, {}):
                    err(f"{where}: {config_path} comes from Secret {secret_name} key {key}, which {SECRETS_EXAMPLE} does not define")
                mode = (volume.get("secret") or {}).get("defaultMode")
                if mode is not None and mode & 0o007:
                    err(f"{where}: the config Secret is mounted world-readable (defaultMode {oct(mode)})")
        needs = {"waybill-ingress": {"AMQP_URL"}, "waybill-worker": {"AMQP_URL", "DATABASE_URL"}, MIGRATE_JOB: {"AMQP_URL", "DATABASE_URL"}}.get(name, set())
        for variable in sorted(needs):
            if variable not in env:
                err(f"{where}: {variable} is not set")
            elif env[variable][0] != "secret":
                err(f"{where}: {variable} must come from a Secret (it holds a password)")
        if name == "waybill-ingress" and "DATABASE_URL" in env:
            err(f"{where}: the ingress never touches Postgres (ARCHITECTURE.md): give it no DATABASE_URL")
        # Roles.
        if kind == "Job":
            spec = document.get("spec") or {}
            if pod.get("restartPolicy") not in ("Never", "OnFailure"):
                err(f"{where}: restartPolicy must be Never or OnFailure")
            if spec.get("backoffLimit") is None:
                err(f"{where}: set a backoffLimit")
            script = command[2] if len(command) > 2 else " ".join(command)
            m, t = script.find("waybill migrate"), script.find("waybill topology")
            if m < 0 or t < 0 or t < m:
                err(f"{where}: must run 'waybill migrate' then 'waybill topology' (runs {command})")
            continue
        if name not in ROLES:
            continue
        binary, port, section, addr_env = ROLES[name]
        if command != binary:
            err(f"{where}: command must be {binary} (is {command})")
        addr = (env.get(addr_env) or ("value", str((settings.get(section) or {}).get("addr", ""))))[1]
        if addr and not addr.endswith(f":{port}"):
            err(f"{where}: listens on {addr} ({section}.addr / {addr_env}), the manifests use {port}")
        if port not in [p.get("containerPort") for p in container.get("ports") or []]:
            err(f"{where}: does not declare containerPort {port}")
        for probe_name, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz"), ("startupProbe", "/healthz")):
            probe = container.get(probe_name)
            if probe is None:
                if probe_name != "startupProbe":
                    err(f"{where}: no {probe_name}")
                continue
            http = probe.get("httpGet") or {}
            if http.get("path") != path or resolve_port(container, http.get("port")) != port:
                err(f"{where}: {probe_name} must GET {path} on port {port} (is {http.get('path')} on {http.get('port')})")
        if annotations.get("prometheus.io/scrape") != "true" or annotations.get("prometheus.io/port") != str(port) \
                or annotations.get("prometheus.io/path", "/metrics") != "/metrics":
            err(f"{where}: pod annotations must say prometheus.io/scrape \"true\", port \"{port}\", path /metrics (are {annotations})")
        grace = pod.get("terminationGracePeriodSeconds", 30)
        drain = int((settings.get(section) or {}).get("shutdown_grace_ms", 0)) / 1000
        needed = pre_stop_seconds(container) + drain + 5
        if grace < needed:
            err(f"{where}: terminationGracePeriodSeconds {grace} < preStop {pre_stop_seconds(container)} s + {section}.shutdown_grace_ms {drain:g} s + 5 s margin")
        spec = document.get("spec") or {}
        if not matches((spec.get("selector") or {}).get("matchLabels"), pod_labels):
            err(f"{where}: spec.selector does not match the pod template's labels")
        if (spec.get("strategy") or {}).get("rollingUpdate", {}).get("maxUnavailable") not in (0, "0", "0%"):
            warn(f"{where}: rollingUpdate.maxUnavailable is not 0: a rollout lowers capacity")

if len(images) > 1:
    err(f"{K8S_DIR}: the workloads run different images {sorted(map(str, images))}; the migration Job must match the Deployments")
kustomize_images = {i.get("name") for i in kustomization.get("images") or []}
for original in ("waybill",):
    if original not in kustomize_images:
        err(f"{KUSTOMIZATION}: images has no entry for {original!r}, so overlays cannot set the registry and version")

# ============================== Services, autoscalers, disruption budgets ========================
def pods_of(selector):
    return [n for n, d in deployments.items()
            if matches(selector, ((d["spec"].get("template") or {}).get("metadata") or {}).get("labels") or {})]


for name, service in by_kind.get("Service", {}).items():
    where = f"{K8S_DIR}: Service/{name}"
    targets = pods_of((service.get("spec") or {}).get("selector"))
    if len(targets) != 1:
        err(f"{where}: its selector matches {targets}, expected exactly one Deployment")
        continue
    container = deployments[targets[0]]["spec"]["template"]["spec"]["containers"][0]
    for port in (service.get("spec") or {}).get("ports") or []:
        if resolve_port(container, port.get("targetPort", port.get("port"))) is None:
            err(f"{where}: targetPort {port.get('targetPort')} is not a port of {targets[0]}")
for deployment in ROLES:
    if deployment in deployments and not any(pods_of((s.get("spec") or {}).get("selector")) == [deployment] for s in by_kind.get("Service", {}).values()):
        err(f"{K8S_DIR}: no Service in front of {deployment}")

scaled = {}
for name, hpa in by_kind.get("HorizontalPodAutoscaler", {}).items():
    where = f"{K8S_DIR}: HorizontalPodAutoscaler/{name}"
    spec = hpa.get("spec") or {}
    target = (spec.get("scaleTargetRef") or {}).get("name")
    if (spec.get("scaleTargetRef") or {}).get("kind") != "Deployment" or target not in deployments:
        err(f"{where}: scaleTargetRef is not a Deployment of the base ({spec.get('scaleTargetRef')})")
    scaled.setdefault(target, []).append(f"HorizontalPodAutoscaler/{name}")
    if (spec.get("minReplicas") or 1) < 2:
        err(f"{where}: minReplicas must be at least 2 (one pod is no redundancy)")
    if spec.get("maxReplicas", 0) < (spec.get("minReplicas") or 1):
        err(f"{where}: maxReplicas below minReplicas")
    cpu = [m for m in spec.get("metrics") or [] if m.get("type") == "Resource" and (m.get("resource") or {}).get("name") == "cpu"]
    if not cpu or ((cpu[0]["resource"].get("target") or {}).get("type")) != "Utilization":
        err(f"{where}: expected a CPU Utilization metric")
if "waybill-ingress" in deployments and "waybill-ingress" not in scaled:
    err(f"{K8S_DIR}: no HorizontalPodAutoscaler scales waybill-ingress")

# ------------------------------ KEDA, against the fields KEDA documents ---------------------------
SCALEDOBJECT_SPEC = {"scaleTargetRef", "pollingInterval", "cooldownPeriod", "initialCooldownPeriod", "idleReplicaCount",
                     "minReplicaCount", "maxReplicaCount", "fallback", "advanced", "triggers"}
SCALE_TARGET_KEYS = {"apiVersion", "kind", "name", "envSourceContainerName"}
FALLBACK_KEYS = {"failureThreshold", "replicas", "behavior"}
ADVANCED_KEYS = {"restoreToOriginalReplicaCount", "horizontalPodAutoscalerConfig", "scalingModifiers"}
HPA_CONFIG_KEYS = {"name", "behavior"}
TRIGGER_KEYS = {"type", "name", "metadata", "authenticationRef", "metricType", "useCachedMetrics"}
RABBITMQ_METADATA = {"host", "hostFromEnv", "protocol", "mode", "value", "activationValue", "queueName", "vhostName",
                     "queueLength", "useRegex", "pageSize", "operation", "timeout", "excludeUnacknowledged", "unsafeSsl",
                     "usernameFromEnv", "passwordFromEnv"}
TRIGGER_AUTH_SPEC = {"podIdentity", "secretTargetRef", "env", "configMapTargetRef", "hashiCorpVault", "azureKeyVault",
                     "awsSecretManager", "gcpSecretManager", "boundServiceAccountToken"}
RABBITMQ_AUTH_PARAMETERS = {"host", "tls", "ca", "cert", "key", "keyPassword", "username", "password", "workloadIdentityResource"}


def check_keys(value, allowed, where):
    if not isinstance(value, dict):
        err(f"{where}: must be a mapping")
        return False
    for key in value:
        if key not in allowed:
            err(f"{where}: unknown field {key!r} (KEDA documents {sorted(allowed)})")
    return True


def check_behavior(behavior, where):
    if not check_keys(behavior, {"scaleUp", "scaleDown"}, where):
        return
    for direction, rules in behavior.items():
        if not check_keys(rules, {"stabilizationWindowSeconds", "selectPolicy", "policies"}, f"{where}.{direction}"):
            continue
        for i, policy in enumerate(rules.get("policies") or []):
            if policy.get("type") not in ("Pods", "Percent") or not all(isinstance(policy.get(k), int) and policy.get(k) > 0 for k in ("value", "periodSeconds")):
                err(f"{where}.{direction}.policies[{i}]: needs type Pods|Percent and positive integers value, periodSeconds")


def is_number(text):
    try:
        return float(text) > 0
    except (TypeError, ValueError):
        return False


trigger_auths = by_kind.get("TriggerAuthentication", {})
for name, auth in trigger_auths.items():
    where = f"{K8S_DIR}: TriggerAuthentication/{name}"
    spec = auth.get("spec") or {}
    check_keys(spec, TRIGGER_AUTH_SPEC, f"{where}.spec")
    for i, ref in enumerate(spec.get("secretTargetRef") or []):
        check_keys(ref, {"parameter", "name", "key"}, f"{where}.spec.secretTargetRef[{i}]")
        if not all(ref.get(k) for k in ("parameter", "name", "key")):
            err(f"{where}.spec.secretTargetRef[{i}]: parameter, name and key are all required")
        if ref.get("key") not in secrets.get(ref.get("name"), {}):
            err(f"{where}: reads Secret {ref.get('name')} key {ref.get('key')}, which {SECRETS_EXAMPLE} does not define")

worker_amqp = None
if "waybill-worker" in deployments:
    worker_amqp = env_of(deployments["waybill-worker"]["spec"]["template"]["spec"]["containers"][0]).get("AMQP_URL")
postgres_budget = 0
for name, scaled_object in by_kind.get("ScaledObject", {}).items():
    where = f"{K8S_DIR}: ScaledObject/{name}"
    spec = scaled_object.get("spec") or {}
    check_keys(spec, SCALEDOBJECT_SPEC, f"{where}.spec")
    target_ref = spec.get("scaleTargetRef") or {}
    check_keys(target_ref, SCALE_TARGET_KEYS, f"{where}.spec.scaleTargetRef")
    if target_ref.get("kind", "Deployment") != "Deployment" or target_ref.get("name") not in deployments:
        err(f"{where}: scaleTargetRef {target_ref} is not a Deployment of the base")
    target = target_ref.get("name")
    scaled.setdefault(target, []).append(f"ScaledObject/{name}")
    for key in ("pollingInterval", "cooldownPeriod", "initialCooldownPeriod", "idleReplicaCount", "minReplicaCount", "maxReplicaCount"):
        if key in spec and (not isinstance(spec[key], int) or spec[key] < 0):
            err(f"{where}: spec.{key} must be a non-negative integer (is {spec[key]!r})")
    low, high = spec.get("minReplicaCount", 0), spec.get("maxReplicaCount", 100)
    if isinstance(low, int) and low < 2:
        err(f"{where}: minReplicaCount must be at least 2 (the shipments API, the outbox relay, redundancy)")
    if isinstance(low, int) and isinstance(high, int) and high < low:
        err(f"{where}: maxReplicaCount {high} below minReplicaCount {low}")
    if "idleReplicaCount" in spec and spec["idleReplicaCount"] >= low:
        err(f"{where}: idleReplicaCount must be below minReplicaCount")
    if "fallback" in spec:
        fallback = spec["fallback"]
        check_keys(fallback, FALLBACK_KEYS, f"{where}.spec.fallback")
        for key in ("failureThreshold", "replicas"):
            if not isinstance((fallback or {}).get(key), int) or fallback[key] < 1:
                err(f"{where}: spec.fallback.{key} is required, a positive integer")
    advanced = spec.get("advanced") or {}
    check_keys(advanced, ADVANCED_KEYS, f"{where}.spec.advanced")
    hpa_config = advanced.get("horizontalPodAutoscalerConfig") or {}
    check_keys(hpa_config, HPA_CONFIG_KEYS, f"{where}.spec.advanced.horizontalPodAutoscalerConfig")
    if "behavior" in hpa_config:
        check_behavior(hpa_config["behavior"], f"{where}.spec.advanced.horizontalPodAutoscalerConfig.behavior")
    triggers = spec.get("triggers") or []
    if not triggers:
        err(f"{where}: spec.triggers is empty")
    names, scaled_queues = set(), set()
    for i, trigger in enumerate(triggers):
        at = f"{where}.spec.triggers[{i}]"
        check_keys(trigger, TRIGGER_KEYS, at)
        if trigger.get("name") in names:
            err(f"{at}: trigger name {trigger.get('name')!r} used twice")
        names.add(trigger.get("name"))
        if trigger.get("type") != "rabbitmq":
            err(f"{at}: type must be rabbitmq (is {trigger.get('type')!r})")
            continue
        if trigger.get("metricType", "AverageValue") not in ("AverageValue", "Value"):
            err(f"{at}: metricType must be AverageValue or Value")
        metadata = trigger.get("metadata") or {}
        check_keys(metadata, RABBITMQ_METADATA, f"{at}.metadata")
        for key, value in metadata.items():
            if not isinstance(value, str):
                err(f"{at}.metadata.{key}: KEDA's metadata is a map of strings; quote {value!r}")
        protocol = metadata.get("protocol", "auto")
        mode = metadata.get("mode")
        if protocol not in ("auto", "amqp", "http"):
            err(f"{at}.metadata.protocol: auto, amqp or http (is {protocol!r})")
        if mode != "QueueLength":
            err(f"{at}.metadata.mode: Waybill scales on queue depth, mode QueueLength (is {mode!r})")
        if mode == "MessageRate" and protocol != "http":
            err(f"{at}: mode MessageRate needs protocol http")
        if metadata.get("excludeUnacknowledged") and protocol != "http":
            err(f"{at}: excludeUnacknowledged applies to protocol http only")
        if not is_number(metadata.get("value")):
            err(f"{at}.metadata.value must be a positive number as a string (is {metadata.get('value')!r})")
        if "activationValue" in metadata and not re.match(r"^\d+(\.\d+)?$", metadata["activationValue"]):
            err(f"{at}.metadata.activationValue must be a number as a string")
        if "@" in metadata.get("host", ""):
            err(f"{at}.metadata.host holds credentials: use the TriggerAuthentication")
        scaled_queues.add(metadata.get("queueName"))
        auth_ref = trigger.get("authenticationRef") or {}
        check_keys(auth_ref, {"name", "kind"}, f"{at}.authenticationRef")
        if not metadata.get("host") and not metadata.get("hostFromEnv"):
            if auth_ref.get("kind", "TriggerAuthentication") != "TriggerAuthentication" or auth_ref.get("name") not in trigger_auths:
                err(f"{at}: no host, and authenticationRef {auth_ref} is no TriggerAuthentication of the base")
                continue
            refs = (trigger_auths[auth_ref["name"]].get("spec") or {}).get("secretTargetRef") or []
            for ref in refs:
                if ref.get("parameter") not in RABBITMQ_AUTH_PARAMETERS:
                    err(f"{K8S_DIR}: TriggerAuthentication/{auth_ref['name']}: parameter {ref.get('parameter')!r} is not one the rabbitmq scaler reads ({sorted(RABBITMQ_AUTH_PARAMETERS)})")
            host = next((r for r in refs if r.get("parameter") == "host"), None)
            if host is None:
                err(f"{at}: TriggerAuthentication/{auth_ref['name']} gives no `host` parameter")
                continue
            if worker_amqp and worker_amqp[0] == "secret" and (host.get("name"), host.get("key")) != worker_amqp[1:]:
                err(f"{at}: KEDA reads the broker URL from {host.get('name')}/{host.get('key')}, the worker from {worker_amqp[1]}/{worker_amqp[2]}: one URL, one place")
            example = secrets.get(host.get("name"), {}).get(host.get("key"), "")
            scheme = example.split("://")[0] if "://" in example else None
            wanted = {"amqp": ("amqp", "amqps"), "http": ("http", "https")}.get(protocol, ("amqp", "amqps", "http", "https"))
            if scheme and scheme not in wanted:
                err(f"{at}: protocol {protocol} but the host URL in {SECRETS_EXAMPLE} is {scheme}://")
    wanted_queues = {queues.get("webhooks_queue"), queues.get("polls_queue")} - {None}
    if scaled_queues != wanted_queues:
        err(f"{where}: triggers scale on {sorted(map(str, scaled_queues))}, the topology's inbound queues are {sorted(wanted_queues)}")
    if isinstance(high, int):
        postgres_budget = high * int((settings.get("database") or {}).get("max_connections", 0)) + 1
if "waybill-worker" in deployments and not any(s.startswith("ScaledObject/") for s in scaled.get("waybill-worker", [])):
    err(f"{K8S_DIR}: no KEDA ScaledObject scales waybill-worker")
if postgres_budget > 100:
    warn(f"{K8S_DIR}: at maxReplicaCount the workers open {postgres_budget - 1} Postgres connections (replicas × database.max_connections), above Postgres' default max_connections of 100")
for target, owners in scaled.items():
    if len(owners) > 1:
        err(f"{K8S_DIR}: Deployment {target} is scaled by {owners}; two autoscalers fight")
    if target in deployments and "replicas" in deployments[target]["spec"]:
        err(f"{K8S_DIR}: Deployment {target} sets replicas although {owners[0]} owns the count (every apply would reset it)")

for name in deployments:
    selector_of = lambda d: ((d.get("spec") or {}).get("selector") or {}).get("matchLabels")  # noqa: E731
    budgets = [p for p, d in by_kind.get("PodDisruptionBudget", {}).items() if pods_of(selector_of(d)) == [name]]
    if len(budgets) != 1:
        err(f"{K8S_DIR}: Deployment {name} needs exactly one PodDisruptionBudget (has {budgets})")
        continue
    spec = by_kind["PodDisruptionBudget"][budgets[0]]["spec"]
    if ("minAvailable" in spec) == ("maxUnavailable" in spec):
        err(f"{K8S_DIR}: PodDisruptionBudget/{budgets[0]} needs exactly one of minAvailable, maxUnavailable")
    if spec.get("maxUnavailable") in (0, "0", "0%"):
        err(f"{K8S_DIR}: PodDisruptionBudget/{budgets[0]} allows no eviction: node drains would hang")

# ------------------------------ the overlay: KEDA references follow a rename ----------------------
if OVERLAY and os.path.exists(OVERLAY) and os.path.getsize(OVERLAY):
    renamed = {(d.get("kind"), d["metadata"]["name"]): d for d in load_all(OVERLAY)}
    for (kind, name), document in renamed.items():
        if document["metadata"].get("namespace") != "overlay-check":
            err(f"overlay check: {kind}/{name} did not take the overlay's namespace")
        spec = document.get("spec") or {}
        if kind == "ScaledObject":
            if (spec.get("scaleTargetRef") or {}).get("name") not in {n for k, n in renamed if k == "Deployment"}:
                err(f"overlay check: ScaledObject/{name}.scaleTargetRef.name {spec['scaleTargetRef'].get('name')!r} did not follow the Deployment's namePrefix (kustomizeconfig.yaml)")
            for trigger in spec.get("triggers") or []:
                if (trigger.get("authenticationRef") or {}).get("name") not in {n for k, n in renamed if k == "TriggerAuthentication"}:
                    err(f"overlay check: ScaledObject/{name}: authenticationRef {trigger.get('authenticationRef')} did not follow the namePrefix (kustomizeconfig.yaml)")
        if kind == "HorizontalPodAutoscaler" and (spec.get("scaleTargetRef") or {}).get("name") not in {n for k, n in renamed if k == "Deployment"}:
            err(f"overlay check: HorizontalPodAutoscaler/{name} lost its Deployment under a namePrefix")

# ------------------------------ the example overlay of docs/operations.md --------------------------
EXAMPLE = os.path.join(OUT, "example.yaml")
if os.path.exists(EXAMPLE) and os.path.getsize(EXAMPLE):
    example_documents = load_all(EXAMPLE)
    if {(d.get("kind"), d["metadata"]["name"]) for d in example_documents} != {(d.get("kind"), d["metadata"]["name"]) for d in documents}:
        err(f"{OPERATIONS}: the example overlay renders other resources than the base")
    for document in example_documents:
        if not document["metadata"].get("namespace"):
            err(f"{OPERATIONS}: the example overlay leaves {document.get('kind')}/{document['metadata']['name']} without a namespace")
        for pod_spec in pod_specs(document):
            for container in containers_of(pod_spec):
                if split_image(container.get("image", ""))[0] == "waybill":
                    err(f"{OPERATIONS}: the example overlay does not set the image of {document['metadata']['name']}")

# ============================== PrometheusRule ===================================================
RULE_KEYS = {"alert", "record", "expr", "for", "keep_firing_for", "labels", "annotations"}
GROUP_KEYS = {"name", "interval", "rules", "limit", "partial_response_strategy", "query_offset", "labels"}
DURATION = re.compile(r"^((\d+)(ms|s|m|h|d|w|y))+$")
# Metrics the manifests may name: those the issue specifies (some are added by other work) and any
# the Rust code registers. waybill_* names beyond both are typos.
SPECIFIED_METRICS = {
    "waybill_webhooks_received_total", "waybill_webhook_ack_seconds", "waybill_publish_confirm_seconds",
    "waybill_publish_failures_total", "waybill_worker_batch_size", "waybill_worker_batch_seconds",
    "waybill_merge_events_total", "waybill_worker_batch_retries_total", "waybill_dead_lettered_total",
    "waybill_unmapped_status_total", "waybill_message_age_seconds", "waybill_polls_total",
    "waybill_webhook_attempts_total", "waybill_build_info",
}
code_metrics = set()
for root, _, files in os.walk("crates"):
    for filename in files:
        if filename.endswith(".rs"):
            text = open(os.path.join(root, filename), errors="replace").read()
            code_metrics |= set(re.findall(r"(?:counter|gauge|histogram)!\(\s*\"(waybill_[a-z0-9_]+)\"", text))
if os.path.exists("docs/metrics.md"):
    code_metrics |= set(re.findall(r"\bwaybill_[a-z0-9_]+", open("docs/metrics.md").read())) - {"waybill_"}
known_metrics = SPECIFIED_METRICS | code_metrics


def metric_names(expr):
    names = set()
    for name in re.findall(r"\b(waybill_[a-z0-9_]+)", expr):
        for suffix in ("_bucket", "_sum", "_count"):
            if name.endswith(suffix) and name[: -len(suffix)] in known_metrics:
                name = name[: -len(suffix)]
        names.add(name)
    return names


def check_promql(expr, where):
    depth = {"(": 0, "[": 0, "{": 0}
    pairs = {")": "(", "]": "[", "}": "{"}
    in_string = None
    for char in expr:
        if in_string:
            in_string = None if char == in_string else in_string
            continue
        if char in "\"'`":
            in_string = char
        elif char in depth:
            depth[char] += 1
        elif char in pairs:
            depth[pairs[char]] -= 1
            if depth[pairs[char]] < 0:
                err(f"{where}: unbalanced {char!r} in {expr!r}")
                return
    if in_string or any(depth.values()):
        err(f"{where}: unbalanced brackets or quotes in {expr!r}")
    for name in metric_names(expr) - known_metrics:
        err(f"{where}: names {name}, which is neither a specified metric nor one the code registers")
    for match in re.finditer(r"histogram_quantile\(", expr):
        tail = expr[match.end():]
        if "_bucket" not in tail or not re.search(r"\ble\b", tail):
            err(f"{where}: histogram_quantile over something other than a _bucket series aggregated by le")


def github_anchor(heading):
    text = heading.strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


operations_text = open(OPERATIONS).read() if os.path.exists(OPERATIONS) else ""
if not operations_text:
    err(f"{OPERATIONS} is missing")
anchors = {github_anchor(h) for h in re.findall(r"^#+\s+(.*)$", operations_text, re.M)}
alert_rules = []
alert_names = set()
for name, rule_set in by_kind.get("PrometheusRule", {}).items():
    where = f"{K8S_DIR}: PrometheusRule/{name}"
    spec = rule_set.get("spec") or {}
    for key in spec:
        if key not in ("groups",):
            err(f"{where}: unknown spec field {key!r}")
    group_names = set()
    for group in spec.get("groups") or []:
        gwhere = f"{where} group {group.get('name')}"
        for key in group:
            if key not in GROUP_KEYS:
                err(f"{gwhere}: unknown field {key!r}")
        if not group.get("name") or group.get("name") in group_names:
            err(f"{gwhere}: group names must be present and unique")
        group_names.add(group.get("name"))
        for rule in group.get("rules") or []:
            rwhere = f"{gwhere} rule {rule.get('alert') or rule.get('record')}"
            for key in rule:
                if key not in RULE_KEYS:
                    err(f"{rwhere}: unknown field {key!r}")
            if ("alert" in rule) == ("record" in rule):
                err(f"{rwhere}: exactly one of alert, record")
            expr = rule.get("expr")
            if not isinstance(expr, str) or not expr.strip():
                err(f"{rwhere}: expr must be a non-empty string")
                continue
            check_promql(expr, rwhere)
            for key in ("for", "keep_firing_for"):
                if key in rule and not DURATION.match(str(rule[key])):
                    err(f"{rwhere}: {key} {rule[key]!r} is not a Prometheus duration")
            for key, value in list((rule.get("labels") or {}).items()) + list((rule.get("annotations") or {}).items()):
                if not isinstance(value, str):
                    err(f"{rwhere}: label/annotation {key} must be a string (is {value!r})")
            if "alert" in rule:
                alert = rule["alert"]
                if alert in alert_names:
                    err(f"{rwhere}: alert name used twice")
                alert_names.add(alert)
                if not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", alert):
                    err(f"{rwhere}: alert name must be a metric-name-like identifier")
                if (rule.get("labels") or {}).get("severity") not in ("critical", "warning", "info"):
                    err(f"{rwhere}: labels.severity must be critical, warning or info")
                annotations = rule.get("annotations") or {}
                for key in ("summary", "description", "runbook"):
                    if not annotations.get(key):
                        err(f"{rwhere}: annotations.{key} is missing")
                runbook = annotations.get("runbook", "")
                page, _, anchor = runbook.partition("#")
                if page != OPERATIONS or anchor != alert.lower():
                    err(f"{rwhere}: annotations.runbook must be {OPERATIONS}#{alert.lower()} (is {runbook!r})")
                elif anchor not in anchors:
                    err(f"{rwhere}: {OPERATIONS} has no section '{alert}' (the runbook anchor #{anchor})")
            alert_rules.append(rule)
    group_blob = json.dumps(spec)
    # What the operators were promised an alert for.
    for needle, what in (('outcome=\\"unavailable\\"', "503s at the ingress"), ("rabbitmq_queue_messages_ready", "a growing queue"),
                         ("waybill_dead_lettered_total", "dead letters"), ("waybill_unmapped_status_total", "unmapped statuses"),
                         ("waybill_worker_batch_retries_total", "batch retries"), ("waybill_webhook_attempts_total", "delivery failures"),
                         ("kube_deployment_status_replicas_unavailable", "readiness failing")):
        if needle not in group_blob:
            err(f"{where}: no alert on {what} ({needle})")
if not by_kind.get("PrometheusRule"):
    err(f"{K8S_DIR}: no PrometheusRule (alerts.yaml)")
# The label values the rules compare with must be ones the code emits.
ingress_sources = ""
for root, _, files in os.walk("crates/waybill-ingress/src"):
    ingress_sources += "".join(open(os.path.join(root, f)).read() for f in files if f.endswith(".rs"))
for rule in alert_rules:
    for value in re.findall(r'waybill_webhooks_received_total\{[^}]*outcome="([a-z_]+)"', rule["expr"]):
        if f'"{value}"' not in ingress_sources:
            err(f"{K8S_DIR}: alert {rule.get('alert')} compares outcome=\"{value}\", which waybill-ingress never emits")
for alert in sorted(alert_names):
    if f"`{alert}`" not in operations_text and alert not in operations_text:
        err(f"{OPERATIONS}: does not explain alert {alert}")

# ============================== the Grafana dashboard ============================================
DASHBOARD_METRICS = SPECIFIED_METRICS
dashboard_exprs = []
try:
    dashboard = json.load(open(DASHBOARD))
except (OSError, json.JSONDecodeError) as exc:
    err(f"{DASHBOARD}: not valid JSON: {exc}")
    dashboard = None
if dashboard is not None:
    for key in ("uid", "title", "schemaVersion", "panels", "templating"):
        if key not in dashboard:
            err(f"{DASHBOARD}: top-level {key!r} is missing")
    if not isinstance(dashboard.get("schemaVersion"), int) or dashboard["schemaVersion"] < 36:
        err(f"{DASHBOARD}: schemaVersion {dashboard.get('schemaVersion')!r} (expected 36 or later)")
    variables = {v.get("name"): v for v in (dashboard.get("templating") or {}).get("list") or []}
    datasource = variables.get("datasource") or {}
    if datasource.get("type") != "datasource" or datasource.get("query") != "prometheus":
        err(f"{DASHBOARD}: needs a `datasource` variable of type datasource, query prometheus")
    panels = []
    for panel in dashboard.get("panels") or []:
        panels.append(panel)
        panels += panel.get("panels") or []
    ids, rects, used = set(), [], set()
    for panel in panels:
        pid = panel.get("id")
        where = f"{DASHBOARD}: panel {pid} {panel.get('title')!r}"
        if not isinstance(pid, int) or pid in ids:
            err(f"{where}: panel ids must be unique integers")
        ids.add(pid)
        grid = panel.get("gridPos") or {}
        if not all(isinstance(grid.get(k), int) for k in ("h", "w", "x", "y")) or grid.get("x", 0) + grid.get("w", 0) > 24:
            err(f"{where}: gridPos {grid} must be integers within the 24-column grid")
        else:
            for other_id, other in rects:
                if grid["x"] < other["x"] + other["w"] and other["x"] < grid["x"] + grid["w"] and grid["y"] < other["y"] + other["h"] and other["y"] < grid["y"] + grid["h"]:
                    err(f"{where}: overlaps panel {other_id}")
            rects.append((pid, grid))
        if panel.get("type") == "row":
            continue
        if not panel.get("title"):
            err(f"{where}: has no title")
        if (panel.get("datasource") or {}).get("uid") not in ("${datasource}", "$datasource"):
            err(f"{where}: datasource must be the ${{datasource}} variable (is {panel.get('datasource')})")
        targets = panel.get("targets") or []
        if not targets:
            err(f"{where}: has no query")
        ref_ids = [t.get("refId") for t in targets]
        if len(set(ref_ids)) != len(ref_ids) or None in ref_ids:
            err(f"{where}: target refIds must be present and unique")
        for target in targets:
            expr = target.get("expr") or ""
            if not expr:
                err(f"{where}: target {target.get('refId')} has no expr")
                continue
            if (target.get("datasource") or {}).get("uid") not in (None, "${datasource}", "$datasource"):
                err(f"{where}: target {target.get('refId')} pins a datasource")
            check_promql(expr, where)
            used |= metric_names(expr)
            for variable in re.findall(r"\$(?:\{)?([A-Za-z_]\w*)", expr):
                if variable not in variables and not variable.startswith("__"):
                    err(f"{where}: uses ${variable}, which is no dashboard variable")
            dashboard_exprs.append((pid, expr))
    for metric in sorted(DASHBOARD_METRICS - used):
        err(f"{DASHBOARD}: no panel shows {metric}")
    for metric in sorted((used | metric_names(" ".join(r['expr'] for r in alert_rules))) - code_metrics):
        warn(f"{metric} is specified (issue 7) but not registered by the code yet: its panels and alerts stay empty until it is")

# ============================== outputs for the next steps =======================================
with open(os.path.join(OUT, "k8s-all.yaml"), "w") as handle:
    yaml.safe_dump_all(documents + load_all(SECRETS_EXAMPLE) if os.path.exists(SECRETS_EXAMPLE) else documents, handle, sort_keys=False)
promtool_dir = os.path.join(OUT, "promtool")
os.makedirs(promtool_dir, exist_ok=True)
groups = []
for rule_set in by_kind.get("PrometheusRule", {}).values():
    groups += (rule_set.get("spec") or {}).get("groups") or []
with open(os.path.join(promtool_dir, "alerts.rules.yml"), "w") as handle:
    yaml.safe_dump({"groups": groups}, handle, sort_keys=False)
with open(os.path.join(promtool_dir, "dashboard.rules.yml"), "w") as handle:
    rules = []
    for i, (pid, expr) in enumerate(dashboard_exprs):
        expr = expr.replace("$__rate_interval", "5m").replace("$__interval", "1m").replace("${source}", ".*").replace("$source", ".*")
        rules.append({"record": f"dashboard:panel_{pid}_{i}", "expr": expr})
    yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}, handle, sort_keys=False)
if os.path.exists(ALERT_TESTS):
    with open(ALERT_TESTS) as source, open(os.path.join(promtool_dir, "alerts.test.yml"), "w") as handle:
        handle.write(source.read())
else:
    err(f"{ALERT_TESTS} is missing (promtool unit tests of the alerts)")

print(f"validate-deploy: Kubernetes, alert and dashboard checks: {len(documents)} resource(s), {len(alert_names)} alert(s), "
      f"{len(dashboard_exprs)} dashboard quer(ies); {len(errors)} error(s), {len(warnings)} warning(s)")
sys.exit(1 if errors else 0)
PY
    fail "Kubernetes / alerts / dashboard checks failed (see above)"

  # Schemas of every built-in kind, for the oldest and the newest Kubernetes we support.
  if [ -n "$kv" ] && [ -s "$tmp/k8s-all.yaml" ]; then
    for version in $K8S_VERSIONS; do
      if "$kv" --strict --quiet --no-warn -k "$version" "$tmp/k8s-all.yaml" >"$tmp/kv.out" 2>&1; then
        note "kubernetes-validate --strict -k $version: deploy/k8s and secrets.example.yaml pass"
      else
        sed 's/^/validate-deploy:   /' "$tmp/kv.out" >&2
        fail "kubernetes-validate --strict -k $version rejected deploy/k8s (see above)"
      fi
    done
  fi

  if command -v promtool >/dev/null 2>&1 && [ -s "$tmp/promtool/alerts.rules.yml" ]; then
    before="$errors"
    promtool check rules "$tmp/promtool/alerts.rules.yml" >"$tmp/promtool.out" 2>&1 ||
      { cat "$tmp/promtool.out" >&2; fail "promtool rejected the rules of deploy/k8s/alerts.yaml"; }
    promtool check rules "$tmp/promtool/dashboard.rules.yml" >"$tmp/promtool.out" 2>&1 ||
      { cat "$tmp/promtool.out" >&2; fail "promtool: a query of deploy/grafana/waybill.json does not parse"; }
    if [ -s "$tmp/promtool/alerts.test.yml" ]; then
      (cd "$tmp/promtool" && promtool test rules alerts.test.yml) >"$tmp/promtool.out" 2>&1 ||
        { cat "$tmp/promtool.out" >&2; fail "promtool test rules: deploy/k8s/alerts.test.yaml failed"; }
    fi
    promtool check config deploy/compose/prometheus.yml >"$tmp/promtool.out" 2>&1 ||
      { cat "$tmp/promtool.out" >&2; fail "promtool rejected deploy/compose/prometheus.yml"; }
    if [ "$errors" -eq "$before" ]; then
      note "promtool: the alert rules, their unit tests, the dashboard's queries and prometheus.yml pass"
    fi
  else
    note "skip: promtool not installed (apt-get install prometheus); PromQL syntax checked structurally only"
  fi
fi

# `waybill config` on the example waybill.toml of secrets.example.yaml, with a binary newer than
# the configuration code (CI builds after this script; a stale binary would judge by old rules).
waybill_bin=''
for candidate in target/debug/waybill target/release/waybill; do
  if [ -x "$candidate" ] && [ -z "$(find crates/waybill-config crates/waybill-carriers crates/waybill-cli -newer "$candidate" -type f -print -quit 2>/dev/null)" ]; then
    waybill_bin="$candidate"
    break
  fi
done
if [ -n "$waybill_bin" ] && [ -s "$tmp/waybill.toml" ]; then
  if env -u DATABASE_URL -u AMQP_URL WAYBILL_CONFIG="$tmp/waybill.toml" "$waybill_bin" config >"$tmp/config.out" 2>&1; then
    note "$waybill_bin config: the waybill.toml of $k8s_dir/secrets.example.yaml is valid"
  else
    fail "$k8s_dir/secrets.example.yaml: its waybill.toml is rejected by '$waybill_bin config': $(head -c 600 "$tmp/config.out")"
  fi
else
  note "skip: no up-to-date waybill binary in target/; the example waybill.toml is checked as TOML only"
fi

# --- the healthcheck script, against a throw-away local HTTP server -------------------------------
cat >"$tmp/server.py" <<'PY'
import http.server
import sys


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):  # noqa: N802 - the http.server API
        code = {"/readyz": 200, "/down": 503}.get(self.path, 404)
        self.send_response(code)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
with open(sys.argv[1], "w") as handle:
    handle.write(str(server.server_address[1]))
server.serve_forever()
PY
python3 "$tmp/server.py" "$tmp/port" &
server_pid=$!
for _ in $(seq 50); do
  [ -s "$tmp/port" ] && break
  sleep 0.1
done
if [ -s "$tmp/port" ]; then
  port="$(cat "$tmp/port")"
  bash deploy/compose/healthcheck.sh "$port" /readyz ||
    fail "healthcheck.sh: a 200 on /readyz was reported unhealthy"
  if bash deploy/compose/healthcheck.sh "$port" /down 2>/dev/null; then
    fail "healthcheck.sh: a 503 was reported healthy"
  fi
  kill "$server_pid" 2>/dev/null || true
  wait "$server_pid" 2>/dev/null || true
  server_pid=''
  if bash deploy/compose/healthcheck.sh "$port" /readyz 2>/dev/null; then
    fail "healthcheck.sh: a closed port was reported healthy"
  fi
else
  fail "could not start the local HTTP server for the healthcheck test"
fi

if [ "$errors" -ne 0 ]; then
  echo "validate-deploy: FAILED with $errors problem(s)" >&2
  exit 1
fi
note "OK: Dockerfile, .dockerignore, docker-compose.yml, deploy/compose, deploy/k8s, the alerts, the dashboard and the healthcheck script are consistent"
