#!/usr/bin/env bash
# Static checks of the container build and the local stack — deploy/Dockerfile, .dockerignore,
# docker-compose.yml and deploy/compose/ — that run offline on a machine WITHOUT a Docker engine.
#
#   scripts/validate-deploy.sh        # exit 0: no problem found; non-zero: problems, each listed
#
# What it checks:
#   * `docker compose config -q` when the Compose v2 plugin is installed (needs no engine);
#   * the Dockerfile: instructions, stages, base images (builder and runtime on the same Debian
#     release, Rust not older than the workspace's rust-version), every COPY source exists and is
#     not cut from the build context by .dockerignore, the workspace members and the files under
#     them reach the builder, the binary names match the workspace's [[bin]] targets, the runtime
#     stage runs as non-root, exposes 8080/8081, has its config file and a valid CMD;
#   * Cargo.lock is current (the image builds with `cargo build --locked`);
#   * docker-compose.yml (with PyYAML, skipped with a notice when it is missing): keys, services,
#     commands against the binaries in the image, depends_on conditions and cycles, healthchecks,
#     ports, URLs pointing at the right services, volumes, profiles;
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
  deploy/waybill.example.toml Cargo.toml Cargo.lock; do
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
if command -v docker >/dev/null 2>&1 && docker compose version >/dev/null 2>&1; then
  docker compose -f docker-compose.yml config -q || fail "docker compose config rejected docker-compose.yml"
elif command -v docker-compose >/dev/null 2>&1 &&
  [[ "$(docker-compose version 2>/dev/null || true)" == *"version 1."* ]]; then
  # Compose v1 (Debian's docker-compose package) validates the same schema, minus the top-level
  # `name:` that only v2 knows: check a copy without it.
  compose_dir="$(mktemp -d)"
  sed '/^name:/d' docker-compose.yml >"$compose_dir/docker-compose.yml"
  docker-compose --project-directory . -f "$compose_dir/docker-compose.yml" config -q ||
    fail "docker-compose (v1) config rejected docker-compose.yml"
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
python3 - "$metadata" <<'PY' || fail "Dockerfile / compose checks failed (see above)"
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
else:
    executables = set()

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


if yaml is not None:
    check_compose("docker-compose.yml")

print(f"validate-deploy: Dockerfile and compose checks: {len(errors)} error(s), {len(warnings)} warning(s)")
sys.exit(1 if errors else 0)
PY

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
note "OK: Dockerfile, .dockerignore, docker-compose.yml and the healthcheck script are consistent"
