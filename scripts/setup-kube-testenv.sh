#!/usr/bin/env bash
# Build the kube-apiserver and etcd binaries that livepolicy's integration tests
# run on loopback (see tests/support/envtest.py and docs/kube-testenv.md).
#
# Why build instead of download: this project's machines reach package
# registries only, so envtest's prebuilt release tarballs are out of reach; the
# Go module proxy serves the sources. Versions are pinned by the committed
# go.mod/go.sum under scripts/kube-testenv/ (apiserver) and
# scripts/kube-testenv/etcd/ (etcd; a separate module because k8s.io/kubernetes
# v1.37 would otherwise lift etcd/server to v3.7).
#
# Idempotent: each binary has a stamp recording the pinned version, the hash of
# its go.mod/go.sum and the build flags; when the stamp matches, nothing is
# rebuilt and the script returns at once. Safe to run concurrently (flock).
#
# Usage: scripts/setup-kube-testenv.sh [--force]
# Env:   LIVEPOLICY_CACHE  cache root (default: $HOME/.cache/livepolicy);
#                          binaries go to $LIVEPOLICY_CACHE/bin, Go module and
#                          build caches to $LIVEPOLICY_CACHE/go{mod,cache}.
set -euo pipefail

K8S_VERSION=v1.37.2     # k8s.io/kubernetes; staging modules pinned at v0.37.2
ETCD_VERSION=v3.6.16    # go.etcd.io/etcd/server/v3
MIN_GO=1.26.0           # the go directive of both modules (and of their deps)
# Bump when the build commands below change, so stale binaries are rebuilt.
BUILD_REV=1

force=0
case "${1:-}" in
  --force) force=1 ;;
  "") ;;
  -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
  *) echo "usage: $0 [--force]" >&2; exit 2 ;;
esac

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
mod_apiserver="$here/kube-testenv"
mod_etcd="$here/kube-testenv/etcd"
cache="${LIVEPOLICY_CACHE:-$HOME/.cache/livepolicy}"
bin="$cache/bin"
mkdir -p "$bin"

k8s_minor="${K8S_VERSION#v1.}"; k8s_minor="${k8s_minor%%.*}"
version_pkgs=(k8s.io/component-base/version k8s.io/client-go/pkg/version)
k8s_ldflags="-s -w"
for p in "${version_pkgs[@]}"; do
  k8s_ldflags+=" -X $p.gitVersion=$K8S_VERSION -X $p.gitMajor=1 -X $p.gitMinor=$k8s_minor"
  k8s_ldflags+=" -X $p.gitTreeState=clean"
done
# Same build tags as upstream hack/lib/golang.sh.
k8s_buildflags=(-trimpath -tags "selinux,notest" -ldflags "$k8s_ldflags")
etcd_buildflags=(-trimpath -ldflags "-s -w")

# stamp_for NAME MODULE_DIR VERSION FLAGS...: the text that identifies a build.
stamp_for() {
  local name="$1" dir="$2" version="$3"; shift 3
  printf '%s %s rev=%s\n' "$name" "$version" "$BUILD_REV"
  (cd "$dir" && sha256sum go.mod go.sum)
  printf 'flags: %s\n' "$*"
}

up_to_date() {
  local path="$1" want="$2"
  [[ -x "$path" && -f "$path.stamp" ]] && [[ "$(cat "$path.stamp")" == "$want" ]]
}

want_apiserver="$(stamp_for kube-apiserver "$mod_apiserver" "$K8S_VERSION" "${k8s_buildflags[@]}")"
want_etcd="$(stamp_for etcd "$mod_etcd" "$ETCD_VERSION" "${etcd_buildflags[@]}")"

print_paths() {
  echo "kube-apiserver: $bin/kube-apiserver ($K8S_VERSION)"
  echo "etcd:           $bin/etcd ($ETCD_VERSION)"
  echo "Tests find them there by default; or export LIVEPOLICY_KUBE_BIN=$bin"
}

if [[ $force == 0 ]] && up_to_date "$bin/kube-apiserver" "$want_apiserver" \
   && up_to_date "$bin/etcd" "$want_etcd"; then
  print_paths
  exit 0
fi

# Serialise concurrent runs (e.g. two test sessions on a fresh machine).
exec 9>"$cache/.setup-kube-testenv.lock"
flock 9

# shellcheck source=lib/go.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/go.sh"
require_go "$MIN_GO" "k8s.io/kubernetes $K8S_VERSION"

export GOTOOLCHAIN=local          # never fetch another toolchain
export GOFLAGS="-mod=mod -buildvcs=false"
export CGO_ENABLED=0              # static binaries, as upstream builds them
export GOMODCACHE="$cache/gomod"
export GOCACHE="$cache/gocache"

# build NAME MODULE_DIR PACKAGE STAMP FLAGS...
build() {
  local name="$1" dir="$2" pkg="$3" want="$4"; shift 4
  local out="$bin/$name"
  if [[ $force == 0 ]] && up_to_date "$out" "$want"; then
    echo "$name: up to date"
    return
  fi
  echo "$name: building $pkg (this takes a while on a small machine) ..."
  local start=$SECONDS
  rm -f "$out.stamp"
  (cd "$dir" && go build "$@" -o "$out.tmp" "$pkg")
  mv -f "$out.tmp" "$out"
  printf '%s\n' "$want" > "$out.stamp"
  echo "$name: built in $((SECONDS - start)) s"
}

build etcd "$mod_etcd" go.etcd.io/etcd/server/v3 "$want_etcd" "${etcd_buildflags[@]}"
build kube-apiserver "$mod_apiserver" k8s.io/kubernetes/cmd/kube-apiserver "$want_apiserver" \
  "${k8s_buildflags[@]}"

"$bin/kube-apiserver" --version
"$bin/etcd" --version | sed -n 1p   # sed reads it all: head would SIGPIPE etcd under pipefail
print_paths
