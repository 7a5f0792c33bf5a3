# Sourced by scripts/demo and scripts/test: make sure .venv exists and holds the project with the
# given extra, installing only when pyproject.toml changed since the last install.
# usage: ensure_venv <extra>
ensure_venv() {
  local extra="$1" python stamp hash
  python="$(command -v python3.11 || command -v python3)"
  if [ ! -x .venv/bin/python ]; then
    echo "==> creating .venv with $python" >&2
    "$python" -m venv .venv
  fi
  hash="$(sha256sum pyproject.toml | cut -c1-16)"
  stamp=".venv/.installed-$extra-$hash"
  # dev includes demo: either install satisfies a demo run.
  if [ ! -f "$stamp" ] && [ ! -f ".venv/.installed-dev-$hash" ]; then
    echo "==> installing orchestrator-flows[$extra] into .venv" >&2
    .venv/bin/python -m pip install --quiet --upgrade pip >&2
    # --no-compile: byte-compiling every installed module (aws-cdk-lib alone is huge) took
    # a minute; what is imported compiles on first use.
    .venv/bin/python -m pip install --quiet --no-compile -e ".[$extra]" >&2
    touch "$stamp"
  fi
}

# The CDK CLI pinned in package.json, installed into node_modules/ when missing or changed.
ensure_cdk_cli() {
  local stamp
  if ! command -v npm >/dev/null 2>&1 || ! command -v node >/dev/null 2>&1; then
    echo "ERROR: node and npm are needed for the CDK (Node 20 or newer)." >&2
    exit 1
  fi
  stamp="node_modules/.installed-$(sha256sum package.json | cut -c1-16)"
  if [ ! -f "$stamp" ]; then
    echo "==> installing the CDK CLI from package.json" >&2
    npm install --no-audit --no-fund --loglevel=error >&2
    touch "$stamp"
  fi
  # jsii (under aws-cdk-lib) prints a banner on Node 20; the app works on it (tested here).
  export JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION=20
}
