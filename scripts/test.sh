#!/usr/bin/env bash
# Runs Waybill's whole test suite against real PostgreSQL and RabbitMQ on 127.0.0.1 (started
# first if they are installed but stopped). Each test creates its own database and its own
# queue-name prefix, so tests run in parallel and leave nothing behind.
#
#   scripts/test.sh            # everything
#   scripts/test.sh -p waybill-core   # extra arguments go to cargo test
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/services.sh
ensure_services

# Every crate of the lock file, for every target platform: the purity test reads the whole
# dependency tree offline.
cargo fetch --locked

# Formatting and lints first: the lint set is the `[workspace.lints]` table of Cargo.toml.
cargo fmt --all --check
cargo clippy --workspace --all-targets --locked -- -D warnings

# No unused dependencies: cargo-machete, a pinned crates.io release, installed under target/ once.
machete_version=0.9.2
if ! target/cargo-tools/bin/cargo-machete --version 2>/dev/null | grep -qF "$machete_version"; then
  cargo install --quiet --locked --root target/cargo-tools cargo-machete --version "$machete_version"
fi
target/cargo-tools/bin/cargo-machete

export WAYBILL_TEST_DATABASE_URL="${WAYBILL_TEST_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}"
export WAYBILL_TEST_AMQP_URL="${WAYBILL_TEST_AMQP_URL:-amqp://guest:guest@127.0.0.1:5672/%2f}"

# The pure crates must stay pure: no runtime, database, broker or HTTP framework beneath them.
for crate in waybill-core waybill-carriers; do
  if cargo tree -p "$crate" -e normal --prefix none | grep -Eq '^(tokio|sqlx|lapin|axum|reqwest) '; then
    echo "error: $crate depends on an IO crate:" >&2
    cargo tree -p "$crate" -e normal -i tokio 2>/dev/null | head -20 >&2 || true
    exit 1
  fi
done
# The ingress must never touch Postgres.
if cargo tree -p waybill-ingress -e normal --prefix none | grep -Eq '^(sqlx|waybill-store) '; then
  echo "error: waybill-ingress depends on the store or sqlx" >&2
  exit 1
fi

# The image, compose and Kubernetes files, alerts and dashboard, checked offline by the standard
# tools (installed under target/deploy-tools/ on first use; no Docker engine or cluster needed).
bash scripts/check-deploy.sh

# Debian's headless Chromium and its WebDriver, for the console's browser test; installed once.
ensure_chromium() {
  if command -v chromedriver >/dev/null 2>&1 && command -v chromium >/dev/null 2>&1; then
    return
  fi
  local sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "installing chromium and chromium-driver for the console's browser test" >&2
  DEBIAN_FRONTEND=noninteractive $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq chromium chromium-driver >/dev/null
}

cargo test --workspace "$@"

# The suites that run the real binaries (docs/reliability.md): hostile callers, traces exported
# to an OTLP receiver, the cluster fault suite, then the fault suite, which restarts, blocks and
# cuts off the RabbitMQ and PostgreSQL above and so runs alone and last. Skipped when arguments narrow the run.
if [ "$#" -eq 0 ]; then
  cargo build --workspace --bins
  cargo test -p waybill-e2e --test e2e -- --ignored --nocapture hostile::
  # Log injection against the binaries' own output, in both formats (docs/security.md), the
  # CLI's stdout at RUST_LOG=trace (docs/cli.md), and Schemathesis against both served OpenAPI
  # documents (a pinned PyPI release, installed into a
  # virtual environment under target/ when missing).
  schemathesis_version=4.32.5
  if ! target/schemathesis/bin/st --version 2>/dev/null | grep -qF "$schemathesis_version"; then
    python3 -m venv target/schemathesis
    target/schemathesis/bin/pip install --quiet "schemathesis==$schemathesis_version"
  fi
  cargo test -p waybill-e2e --test e2e -- --ignored --nocapture hardening::
  cargo test -p waybill-e2e --test e2e -- --ignored --nocapture otlp_export::
  # The operator console in headless Chromium (Debian's chromium and chromium-driver).
  ensure_chromium
  cargo test -p waybill-e2e --test e2e -- --ignored --nocapture console::
  # The cluster fault suite: three extra RabbitMQ nodes beside the local broker (which it only
  # uses), stopped and removed at the end; it needs the RabbitMQ server package.
  if command -v rabbitmq-server >/dev/null 2>&1 || [ -x /usr/lib/rabbitmq/bin/rabbitmq-server ]; then
    cargo test -p waybill-e2e --test isolated -- --ignored --nocapture cluster::
  else
    echo "rabbitmq-server is not installed: skipping the cluster fault suite" >&2
  fi
  cargo test -p waybill-e2e --test isolated -- --ignored --nocapture --test-threads=1 faults::
fi
