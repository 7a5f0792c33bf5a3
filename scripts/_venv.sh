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
    .venv/bin/python -m pip install --quiet -e ".[$extra]" >&2
    touch "$stamp"
  fi
}
