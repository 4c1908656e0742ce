#!/usr/bin/env bash
# The whole test suite, as CI runs it: set up, lint, type-check, layer contracts, tests.
# Extra arguments go to pytest (e.g. scripts/test.sh -k planner).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
# Real parts for the integration tests, cached in ~/.cache/livepolicy (first run: minutes).
./scripts/setup-criu.sh >/dev/null
./scripts/setup-kube-testenv.sh >/dev/null
./scripts/setup-helm.sh >/dev/null
./scripts/setup-node-testenv.sh >/dev/null
# The container image (tests/image), with the ctr that setup-node-testenv.sh builds.
./scripts/build-image.sh >/dev/null
export PATH="$PWD/.venv/bin:$PATH"
echo "== ruff"; ruff check livepolicy tests bench scripts
echo "== mypy"; mypy
echo "== import-linter"; lint-imports
echo "== generated files are current"
livepolicy schema --check --out schemas
livepolicy rules --markdown | diff -u docs/rules.md - >/dev/null \
  || { echo "docs/rules.md is stale: livepolicy rules --markdown > docs/rules.md"; exit 1; }
echo "== pytest"
exec python -m pytest -q -p no:cacheprovider "$@"
