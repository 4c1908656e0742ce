#!/usr/bin/env bash
# Build the binaries of a real Kubernetes node for livepolicy's node tests
# (tests/nodes, tests/support/nodeenv.py, docs/node-testenv.md): kubelet,
# kube-scheduler and kube-controller-manager from k8s.io/kubernetes (the same
# pinned module as kube-apiserver, scripts/kube-testenv/go.mod), containerd,
# its runc shim and ctr, runc, and the CNI plugins the test cluster uses.
#
# Why these versions (shared/design/real-node-on-this-machine.md):
#   containerd v2.3.x: the last line that restores a checkpoint image through
#     CRI CreateContainer (v2.4 removed it; 2.4.2 fails "no command specified").
#   runc v1.5.3: built with cgo and libseccomp (Debian's libseccomp-dev).
#   CNI plugins v1.10.0: bridge, host-local, loopback, portmap.
#
# Also the pod sandbox image (scripts/node-testenv/pause.c, static, packed by
# scripts/oci_image.py) into $LIVEPOLICY_CACHE/node/images/pause.oci.tar.
#
# Idempotent: each binary has a stamp (version, build flags, BUILD_REV); when
# every stamp matches the script returns at once. Safe to run concurrently.
#
# Usage: scripts/setup-node-testenv.sh [--force]
# Env:   LIVEPOLICY_CACHE  cache root (default: $HOME/.cache/livepolicy); the
#                          binaries go to $LIVEPOLICY_CACHE/node/bin.
set -euo pipefail

K8S_VERSION=v1.37.2
CONTAINERD_VERSION=v2.3.7
RUNC_VERSION=v1.5.3
CNI_VERSION=v1.10.0
MIN_GO=1.26.8            # containerd v2.3.7's go directive
PAUSE_IMAGE=registry.k8s.io/pause:3.10-livepolicy  # tests/support/nodeenv.py
BUILD_REV=1              # bump when the build commands below change

force=0
case "${1:-}" in
  --force) force=1 ;;
  "") ;;
  -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
  *) echo "usage: $0 [--force]" >&2; exit 2 ;;
esac

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
mod_k8s="$here/kube-testenv"
cache="${LIVEPOLICY_CACHE:-$HOME/.cache/livepolicy}"
bin="$cache/node/bin"
mkdir -p "$bin"

k8s_minor="${K8S_VERSION#v1.}"; k8s_minor="${k8s_minor%%.*}"
k8s_ldflags="-s -w"
for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  k8s_ldflags+=" -X $p.gitVersion=$K8S_VERSION -X $p.gitMajor=1 -X $p.gitMinor=$k8s_minor"
  k8s_ldflags+=" -X $p.gitTreeState=clean"
done
k8s_flags=(-trimpath -tags "selinux,notest" -ldflags "$k8s_ldflags")
ctrd_pkg=github.com/containerd/containerd/v2
ctrd_flags=(-trimpath -tags "no_btrfs,no_devmapper,no_zfs" -ldflags
  "-s -w -X $ctrd_pkg/version.Version=$CONTAINERD_VERSION -X $ctrd_pkg/version.Revision=livepolicy")
runc_flags=(-trimpath -tags seccomp -ldflags "-s -w -X main.version=${RUNC_VERSION#v}")
cni_flags=(-trimpath -ldflags "-s -w")

k8s_sum="$(cd "$mod_k8s" && sha256sum go.mod go.sum | sha256sum | cut -c1-16)"
# name|how|package|version|cgo|flags-variable: "how" is "mod" (the pinned k8s module)
# or "install" (go install PKG@VERSION: a module without replace lines).
targets=(
  "runc|install|github.com/opencontainers/runc|$RUNC_VERSION|1|runc_flags"
  "bridge|install|github.com/containernetworking/plugins/plugins/main/bridge|$CNI_VERSION|0|cni_flags"
  "host-local|install|github.com/containernetworking/plugins/plugins/ipam/host-local|$CNI_VERSION|0|cni_flags"
  "loopback|install|github.com/containernetworking/plugins/plugins/main/loopback|$CNI_VERSION|0|cni_flags"
  "portmap|install|github.com/containernetworking/plugins/plugins/meta/portmap|$CNI_VERSION|0|cni_flags"
  "containerd|install|$ctrd_pkg/cmd/containerd|$CONTAINERD_VERSION|0|ctrd_flags"
  "containerd-shim-runc-v2|install|$ctrd_pkg/cmd/containerd-shim-runc-v2|$CONTAINERD_VERSION|0|ctrd_flags"
  "ctr|install|$ctrd_pkg/cmd/ctr|$CONTAINERD_VERSION|0|ctrd_flags"
  "kubelet|mod|k8s.io/kubernetes/cmd/kubelet|$K8S_VERSION-$k8s_sum|0|k8s_flags"
  "kube-scheduler|mod|k8s.io/kubernetes/cmd/kube-scheduler|$K8S_VERSION-$k8s_sum|0|k8s_flags"
  "kube-controller-manager|mod|k8s.io/kubernetes/cmd/kube-controller-manager|$K8S_VERSION-$k8s_sum|0|k8s_flags"
)

stamp_of() {  # stamp_of TARGET-LINE: the text that identifies one build
  local name how pkg version cgo flagsvar
  IFS='|' read -r name how pkg version cgo flagsvar <<<"$1"
  local -n flags="$flagsvar"
  printf '%s %s %s rev=%s cgo=%s flags: %s\n' "$name" "$pkg" "$version" "$BUILD_REV" "$cgo" \
    "${flags[*]}"
}

stale=()
for t in "${targets[@]}"; do
  name="${t%%|*}"
  if [[ $force == 1 || ! -x "$bin/$name" || ! -f "$bin/$name.stamp" ]] \
     || [[ "$(cat "$bin/$name.stamp")" != "$(stamp_of "$t")" ]]; then
    stale+=("$t")
  fi
done

print_paths() { echo "node binaries: $bin"; echo "node images: $images"; }

# The sandbox image: rebuilt when pause.c or the packer changes (its hash is the stamp).
images="$cache/node/images"
mkdir -p "$images"
pause_src="$here/node-testenv/pause.c"
pause_stamp="$(cat "$pause_src" "$here/oci_image.py" | sha256sum | cut -c1-16)"
if [[ $force == 1 || ! -f "$images/pause.oci.tar" ]] \
   || [[ "$(cat "$images/pause.oci.tar.stamp" 2>/dev/null)" != "$pause_stamp" ]]; then
  echo "pause: building the sandbox image ..." >&2
  work="$(mktemp -d)"
  mkdir "$work/root"
  gcc -static -O2 -s -o "$work/root/pause" "$pause_src"
  python3 "$here/oci_image.py" layer --root "$work/root" --path pause --epoch 0 \
    --out "$work/pause.tar.gz" >/dev/null
  python3 "$here/oci_image.py" image --layer "$work/pause.tar.gz.json" \
    --ref "$PAUSE_IMAGE" --epoch 0 --entrypoint '["/pause"]' \
    --history "livepolicy node testenv: static pause" --out "$images/pause.oci.tar" >/dev/null
  rm -rf "$work"
  echo "$pause_stamp" >"$images/pause.oci.tar.stamp"
fi

if [[ ${#stale[@]} == 0 ]]; then print_paths; exit 0; fi

exec 9>"$cache/.setup-node-testenv.lock"
flock 9

# shellcheck source=lib/go.sh
source "$here/lib/go.sh"
require_go "$MIN_GO" "containerd $CONTAINERD_VERSION"
if ! pkg-config --exists libseccomp 2>/dev/null; then
  echo "installing libseccomp-dev and pkg-config (runc's seccomp support) ..." >&2
  apt-get install -y -qq libseccomp-dev pkg-config >/dev/null \
    || { apt-get update -qq && apt-get install -y -qq libseccomp-dev pkg-config >/dev/null; }
fi

export GOTOOLCHAIN=local GOFLAGS="-mod=mod -buildvcs=false"
export GOMODCACHE="$cache/gomod" GOCACHE="$cache/gocache"

for t in "${stale[@]}"; do
  IFS='|' read -r name how pkg version cgo flagsvar <<<"$t"
  declare -n flags="$flagsvar"
  echo "$name: building $pkg $version ..." >&2
  start=$SECONDS
  rm -f "$bin/$name.stamp"
  if [[ $how == install ]]; then
    tmp="$(mktemp -d)"
    CGO_ENABLED="$cgo" GOBIN="$tmp" go install "${flags[@]}" "$pkg@$version"
    mv -f "$tmp/$(basename "$pkg")" "$bin/$name"
    rmdir "$tmp"
  else
    (cd "$mod_k8s" && CGO_ENABLED="$cgo" go build "${flags[@]}" -o "$bin/$name.tmp" "$pkg")
    mv -f "$bin/$name.tmp" "$bin/$name"
  fi
  stamp_of "$t" >"$bin/$name.stamp"
  echo "$name: built in $((SECONDS - start)) s" >&2
  unset -n flags
done

"$bin/kubelet" --version
"$bin/containerd" --version
"$bin/runc" --version | sed -n 1p
print_paths
