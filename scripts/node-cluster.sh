#!/usr/bin/env bash
# A real two-node Kubernetes cluster on this machine (docs/node-testenv.md), the one the
# tests in tests/nodes use: `up` starts it and prints `export KUBECONFIG=...`, then runs
# until Ctrl-C (which tears everything down); `down` removes what a crashed run left.
# Needs root and the cached builds of scripts/setup-node-testenv.sh, setup-criu.sh and
# build-image.sh (scripts/test.sh runs them).
set -euo pipefail
cd "$(dirname "$0")/.."
case "${1:-}" in
  up|down) ;;
  *) echo "usage: $0 up|down" >&2; exit 2 ;;
esac
[ "$(id -u)" -eq 0 ] || { echo "node-cluster: must run as root" >&2; exit 1; }
exec env PYTHONPATH="$PWD" .venv/bin/python -m tests.support.nodeenv "$1"
