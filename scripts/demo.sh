#!/usr/bin/env bash
# The main job on the embedded example: validate, plan (saved + Markdown), apply through
# sim agents on loopback, then plan again to show the cluster now matches the policies.
set -euo pipefail
cd "$(dirname "$0")/.."
L=.venv/bin/livepolicy
mkdir -p out
cp examples/cluster.yaml out/cluster.yaml
rm -rf out/.livepolicy
$L validate examples/policies
echo
set +e
$L plan --cluster out/cluster.yaml --policies examples/policies --out out/plan.json \
  --markdown out/plan.md --limit 12 --detailed-exitcode
code=$?
set -e
[ "$code" = 1 ] && exit 1
echo
$L apply out/plan.json --agents sim --state-dir out/.livepolicy --report out/apply.md
echo
echo "Planning again after apply:"
$L plan --cluster out/cluster.yaml --policies examples/policies --detailed-exitcode --limit 3
echo
echo "Saved: out/plan.json, out/plan.md (pull-request comment), out/apply.md (apply report)."
