#!/usr/bin/env bash
# Build the helm binary that renders and lints livepolicy's chart (deploy/helm/livepolicy)
# in the tests (tests/kube/test_chart_*.py) and for users who install from the repo.
#
# Why build instead of download: this project's machines reach package registries
# only, so get.helm.sh is out of reach; the Go module proxy serves helm's sources.
# helm.sh/helm/v3 has no replace lines, so `go install module@version` builds it
# exactly as pinned by helm's own go.sum (checked against the Go checksum database).
# The ldflags are those of helm's Makefile for a tagged release (version, clean tree,
# Kubernetes version used by lint and --kube-version defaults).
#
# Idempotent: a stamp records the pinned version and the build flags; when it matches,
# nothing is rebuilt and the script returns at once. Safe to run concurrently (flock).
#
# Usage: scripts/setup-helm.sh [--force]
# Env:   LIVEPOLICY_CACHE  cache root (default: $HOME/.cache/livepolicy); the binary
#                          goes to $LIVEPOLICY_CACHE/bin/helm, Go module and build
#                          caches to $LIVEPOLICY_CACHE/go{mod,cache}.
set -euo pipefail

HELM_VERSION=v3.22.0    # helm.sh/helm/v3
K8S_MAJOR=1             # from helm's go.mod: k8s.io/client-go v0.37.0 -> 1.37
K8S_MINOR=37
MIN_GO=1.26.0           # the go directive of helm's go.mod
# Bump when the build commands below change, so a stale binary is rebuilt.
BUILD_REV=1

force=0
case "${1:-}" in
  --force) force=1 ;;
  "") ;;
  -h|--help) sed -n '2,18p' "$0"; exit 0 ;;
  *) echo "usage: $0 [--force]" >&2; exit 2 ;;
esac

cache="${LIVEPOLICY_CACHE:-$HOME/.cache/livepolicy}"
bin="$cache/bin"
mkdir -p "$bin"
out="$bin/helm"

v=helm.sh/helm/v3/internal/version
ldflags="-s -w -X $v.version=$HELM_VERSION -X $v.metadata= -X $v.gitTreeState=clean"
for p in helm.sh/helm/v3/pkg/lint/rules helm.sh/helm/v3/pkg/chartutil; do
  ldflags+=" -X $p.k8sVersionMajor=$K8S_MAJOR -X $p.k8sVersionMinor=$K8S_MINOR"
done
buildflags=(-trimpath -ldflags "$ldflags")
want="$(printf 'helm %s rev=%s\nflags: %s\n' "$HELM_VERSION" "$BUILD_REV" "${buildflags[*]}")"

up_to_date() {
  [[ -x "$out" && -f "$out.stamp" ]] && [[ "$(cat "$out.stamp")" == "$want" ]]
}

if [[ $force == 0 ]] && up_to_date; then
  echo "helm: $out ($HELM_VERSION)"
  exit 0
fi

# Serialise concurrent runs (e.g. two test sessions on a fresh machine).
exec 9>"$cache/.setup-helm.lock"
flock 9
if [[ $force == 0 ]] && up_to_date; then   # built by the run we waited for
  echo "helm: $out ($HELM_VERSION)"
  exit 0
fi

# shellcheck source=lib/go.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/go.sh"
require_go "$MIN_GO" "helm $HELM_VERSION"

export GOTOOLCHAIN=local          # never fetch another toolchain
export GOFLAGS="-buildvcs=false"
export CGO_ENABLED=0              # a static binary, as helm releases are
export GOMODCACHE="$cache/gomod"
export GOCACHE="$cache/gocache"

echo "helm: building helm.sh/helm/v3/cmd/helm@$HELM_VERSION (minutes on a small machine) ..."
start=$SECONDS
rm -f "$out.stamp"
tmp="$(mktemp -d "$bin/.helm-build.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT
GOBIN="$tmp" go install "${buildflags[@]}" "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
mv -f "$tmp/helm" "$out"
printf '%s\n' "$want" > "$out.stamp"
echo "helm: built in $((SECONDS - start)) s"
"$out" version --short
echo "helm: $out ($HELM_VERSION)"
