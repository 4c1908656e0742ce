#!/usr/bin/env bash
# build-image.sh: build the livepolicy container image (OCI layout tar) without any
# container engine: a Debian bookworm rootfs from debootstrap, the project's wheel in a
# venv, CRIU and containerd's ctr (see docs/image.md and deploy/image/README.md).
#
# Layers (both reproducible: sorted tar entries, mtimes clamped to SOURCE_DATE_EPOCH,
# numeric owners as in the rootfs, gzip mtime 0; written by scripts/oci_image.py):
#   1. base: `debootstrap --variant=minbase bookworm` + deploy/image/packages.txt, without
#      apt lists, caches, logs, docs, man pages and locales; the rootfs is cached, keyed
#      on the package list, so changing Python code rebuilds only layer 2;
#   2. app: /opt/livepolicy (venv: the wheel of HEAD and the pinned dependencies of
#      deploy/image/requirements.txt), /opt/criu (the prefix of scripts/setup-criu.sh),
#      /usr/local/bin/{livepolicy,criu,ctr}.
#
# A second run with unchanged inputs returns at once (stamp keyed on the package list, the
# lock file, the wheel, this script, oci_image.py, the CRIU stamp, ctr and the epoch).
#
# Usage: scripts/build-image.sh [--ctr PATH | --no-ctr] [--force] [--rebuild-base]
#                               [--worktree] [--lock]
#   --ctr PATH      containerd's ctr to put in the image (default: $LIVEPOLICY_CTR, then
#                   the one scripts/setup-node-testenv.sh builds)
#   --no-ctr        build without ctr (the kubelet runtime then needs agent.kubelet.hostCtr)
#   --force         ignore the stamp: re-tar the base layer, rebuild the app layer
#   --rebuild-base  run debootstrap again even if the cached base rootfs matches
#   --worktree      build the wheel from the working tree (default: the committed HEAD)
#   --lock          re-resolve the runtime dependencies into deploy/image/requirements.txt
# Environment:
#   LIVEPOLICY_CACHE          cache root (default: $HOME/.cache/livepolicy)
#   LIVEPOLICY_DEBIAN_MIRROR  Debian mirror URI (default: the one the machine's apt uses)
#   LIVEPOLICY_CTR            as --ctr
#   SOURCE_DATE_EPOCH         timestamp of the image (default: the time of the last commit
#                             touching the image's inputs)
# Output (stdout, one a line): the OCI tar, the image reference, the manifest digest.
# The tar is ${LIVEPOLICY_CACHE}/image/livepolicy-<version>.oci.tar.
set -euo pipefail

BASE_LAYOUT=1 # bump when the base rootfs recipe below changes
SUITE=bookworm
REPO_NAME="docker.io/library/livepolicy"
MULTIARCH="x86_64-linux-gnu"

cd "$(dirname "$0")/.."
REPO=$PWD
CACHE="${LIVEPOLICY_CACHE:-${HOME:?HOME is not set}/.cache/livepolicy}"
IMG="$CACHE/image"
PACKAGES="$REPO/deploy/image/packages.txt"
LOCK="$REPO/deploy/image/requirements.txt"
OCI="$REPO/scripts/oci_image.py"

CTR="${LIVEPOLICY_CTR:-}"
NO_CTR=0
FORCE=0
REBUILD_BASE=0
WORKTREE=0
RELOCK=0
while [ $# -gt 0 ]; do
    case "$1" in
    --ctr)
        CTR="${2:?--ctr needs a path}"
        shift
        ;;
    --ctr=*) CTR="${1#--ctr=}" ;;
    --no-ctr) NO_CTR=1 ;;
    --force) FORCE=1 ;;
    --rebuild-base) REBUILD_BASE=1 FORCE=1 ;;
    --worktree) WORKTREE=1 ;;
    --lock) RELOCK=1 FORCE=1 ;;
    -h | --help)
        sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'
        exit 0
        ;;
    *)
        echo "build-image: unknown argument: $1 (try --help)" >&2
        exit 2
        ;;
    esac
    shift
done

log() { echo "build-image: $*" >&2; }
die() {
    echo "build-image: ERROR: $*" >&2
    exit 1
}
sha() { sha256sum "$@" | cut -d' ' -f1; }
elapsed() { awk -v a="$1" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }'; }
t_start=$EPOCHREALTIME

[ "$(id -u)" -eq 0 ] || die "must run as root (debootstrap and chroot need it)"
[ "$(uname -m)" = "x86_64" ] || die "only x86_64 (amd64 images) is supported"
# A fresh machine has no debootstrap: install it from the configured Debian mirror (as
# scripts/setup-criu.sh does for its host packages).
if ! command -v debootstrap >/dev/null; then
    log "installing debootstrap (apt-get)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -q --no-install-recommends debootstrap >&2 ||
        { apt-get update -q >&2 && apt-get install -y -q --no-install-recommends debootstrap >&2; } ||
        die "cannot install debootstrap: apt-get install -y debootstrap failed"
fi
for tool in debootstrap unshare chroot git python3 flock; do
    command -v "$tool" >/dev/null || die "'$tool' not found"
done
umask 022

# ---------------------------------------------------------------------------------------
# Inputs.
# ---------------------------------------------------------------------------------------
VERSION=$(python3 -c 'import sys, tomllib; print(tomllib.load(open(sys.argv[1], "rb"))["project"]["version"])' pyproject.toml)
REF="$REPO_NAME:$VERSION"
SOURCES=(pyproject.toml README.md livepolicy)
if [ -z "${SOURCE_DATE_EPOCH:-}" ]; then
    SOURCE_DATE_EPOCH=$(git log -1 --format=%ct HEAD -- "${SOURCES[@]}" deploy/image \
        scripts/build-image.sh scripts/oci_image.py)
fi
[[ "$SOURCE_DATE_EPOCH" =~ ^[0-9]+$ ]] || die "SOURCE_DATE_EPOCH is not a number: $SOURCE_DATE_EPOCH"
export SOURCE_DATE_EPOCH

if [ "$NO_CTR" -eq 0 ]; then
    if [ -z "$CTR" ]; then
        CTR="$CACHE/node/bin/ctr"
        [ -x "$CTR" ] || die "no ctr at $CTR: build it with scripts/setup-node-testenv.sh," \
            "pass --ctr PATH (or LIVEPOLICY_CTR), or build without it with --no-ctr"
    fi
    [ -x "$CTR" ] || die "--ctr $CTR is not an executable file"
    CTR_HASH=$(sha "$CTR")
else
    CTR=""
    CTR_HASH=none
fi

CRIU_WRAPPER=$(./scripts/setup-criu.sh) || die "scripts/setup-criu.sh failed"
CRIU_ROOT=$(dirname "$(dirname "$CRIU_WRAPPER")")
[ -d "$CRIU_ROOT/prefix" ] && [ -f "$CRIU_ROOT/installed" ] || die "no CRIU prefix in $CRIU_ROOT"
CRIU_STAMP=$(grep -v '^installed_at=' "$CRIU_ROOT/installed")

# The Debian mirror the machine's own apt configuration uses (as scripts/setup-criu.sh).
find_mirror() {
    if [ -n "${LIVEPOLICY_DEBIAN_MIRROR:-}" ]; then
        echo "${LIVEPOLICY_DEBIAN_MIRROR%/}"
        return
    fi
    local uri
    # shellcheck disable=SC2016 # $(...) are apt's format fields
    uri=$(apt-get indextargets --format '$(RELEASE) $(REPO_URI)' 'Identifier: Packages' 2>/dev/null |
        awk -v c="$SUITE" '$1 == c && $2 !~ /security/ { print $2; exit }')
    uri=$(echo "${uri:-http://deb.debian.org/debian}" | tr -d ' ')
    echo "${uri%/}"
}
MIRROR=$(find_mirror)

mkdir -p "$IMG"
exec 9>"$IMG/.build.lock"
flock 9

# ---------------------------------------------------------------------------------------
# The wheel, from the committed HEAD (or the working tree), cached by its sources' hash.
# ---------------------------------------------------------------------------------------
SRC="$IMG/.src.$$"
WORK="$IMG/.work.$$"
cleanup() { rm -rf "$SRC" "$WORK"; }
trap cleanup EXIT
rm -rf "$SRC" && mkdir -p "$SRC"
if [ "$WORKTREE" -eq 1 ]; then
    git ls-files -z --cached --others --exclude-standard -- "${SOURCES[@]}" |
        while IFS= read -r -d '' f; do [ -e "$f" ] && printf '%s\0' "$f"; done |
        tar -c --null -T - | tar -x -C "$SRC"
else
    git archive HEAD -- "${SOURCES[@]}" | tar -x -C "$SRC"
fi
# The wheel's zip timestamps come from SOURCE_DATE_EPOCH: part of its key.
SRC_KEY=$( (echo "epoch=$SOURCE_DATE_EPOCH" &&
    cd "$SRC" && find . -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum) | sha)
WHEEL_DIR="$IMG/wheel-$SRC_KEY"
WHEEL=$(find "$WHEEL_DIR" -maxdepth 1 -name "livepolicy-$VERSION-*.whl" 2>/dev/null | head -n1 || true)
if [ -z "$WHEEL" ]; then
    log "building the wheel (sources $SRC_KEY)"
    rm -rf "$IMG"/wheel-* && mkdir -p "$WHEEL_DIR.tmp"
    python3 -m pip wheel --quiet --no-deps --wheel-dir "$WHEEL_DIR.tmp" "$SRC" >&2 ||
        die "pip wheel failed"
    mv "$WHEEL_DIR.tmp" "$WHEEL_DIR"
    WHEEL=$(find "$WHEEL_DIR" -maxdepth 1 -name "livepolicy-$VERSION-*.whl" | head -n1)
    [ -n "$WHEEL" ] || die "pip wheel made no livepolicy-$VERSION wheel"
fi
WHEEL_HASH=$(sha "$WHEEL")

# ---------------------------------------------------------------------------------------
# Fast path.
# ---------------------------------------------------------------------------------------
BASE_KEY=$( (printf 'layout=%s suite=%s mirror=%s\n' "$BASE_LAYOUT" "$SUITE" "$MIRROR" &&
    cat "$PACKAGES") | sha)
KEY=$( (
    echo "base=$BASE_KEY epoch=$SOURCE_DATE_EPOCH ref=$REF wheel=$WHEEL_HASH ctr=$CTR_HASH"
    echo "$CRIU_STAMP"
    [ -f "$LOCK" ] && cat "$LOCK"
    cat "$0" "$OCI"
) | sha)
OUT="$IMG/livepolicy-$VERSION.oci.tar"
STAMP="$OUT.stamp"
if [ "$FORCE" -eq 0 ] && [ -f "$OUT" ] && [ -f "$STAMP" ] && grep -qx "key=$KEY" "$STAMP"; then
    log "up to date: $OUT (use --force to rebuild)"
    echo "$OUT"
    echo "$REF"
    sed -n 's/^digest=//p' "$STAMP"
    exit 0
fi

# Run a command chrooted into $1, with /dev and /proc mounted in a private mount
# namespace (the mounts vanish with it, whatever happens). A fixed hash seed: set
# iteration order must not depend on the process (compileall, pip's metadata).
in_chroot() {
    local root="$1"
    shift
    unshare --mount --propagation private -- /bin/sh -ec '
        r="$1"; shift
        mount --rbind /dev "$r/dev"
        mount -t proc proc "$r/proc"
        exec chroot "$r" /usr/bin/env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
            HOME=/root LANG=C.UTF-8 PYTHONHASHSEED=0 "$@"' sh "$root" "$@"
}

# ---------------------------------------------------------------------------------------
# 1. The base rootfs (cached, keyed on the package list).
# ---------------------------------------------------------------------------------------
BASE="$IMG/base-$BASE_KEY"
if [ "$REBUILD_BASE" -eq 1 ] || [ ! -f "$BASE/done" ]; then
    t0=$EPOCHREALTIME
    mapfile -t pkgs < <(sed 's/#.*//' "$PACKAGES" | tr -s ' \t' '\n' | grep -v '^$')
    log "debootstrap --variant=minbase $SUITE from $MIRROR with: ${pkgs[*]}"
    rm -rf "$IMG"/base-* "$WORK" && mkdir -p "$WORK"
    debootstrap --variant=minbase --components=main --include="$(IFS=,; echo "${pkgs[*]}")" \
        "$SUITE" "$WORK/rootfs" "$MIRROR" >&2 || die "debootstrap failed (log: $WORK/rootfs/debootstrap/debootstrap.log)"
    R="$WORK/rootfs"
    # Bytecode of the stdlib: py3compile's timestamp-based .pyc would be stale after the
    # mtime clamp; unchecked-hash .pyc files are valid whatever the mtimes.
    find "$R/usr/lib/python3" "$R/usr/lib/python3.11" -name __pycache__ -type d -prune \
        -exec rm -rf {} +
    in_chroot "$R" python3 -m compileall -q -j 1 --invalidation-mode unchecked-hash \
        /usr/lib/python3.11 /usr/lib/python3/dist-packages >&2 || die "compileall failed"
    # What a container does not need, or what differs from one build to the next.
    rm -rf "$R"/var/cache/apt/* "$R"/var/lib/apt/lists/* "$R"/var/cache/debconf/*-old \
        "$R"/var/cache/ldconfig/aux-cache "$R"/var/lib/dpkg/*-old "$R"/etc/*- \
        "$R"/usr/share/man "$R"/usr/share/info "$R"/usr/share/lintian "$R"/usr/share/locale/* \
        "$R"/etc/resolv.conf "$R"/etc/hostname "$R"/etc/hosts "$R"/root/.[!.]* \
        "$R"/debootstrap
    find "$R/var/log" -mindepth 1 -delete
    find "$R/usr/share/doc" -mindepth 1 ! -type d ! -name copyright -delete
    find "$R/usr/share/doc" -mindepth 1 -type d -empty -delete
    find "$R/dev" "$R/proc" "$R/sys" "$R/run" "$R/tmp" -mindepth 1 -delete
    [ -e "$R/etc/machine-id" ] && : >"$R/etc/machine-id"
    # Last password change: "days since 1970" of the build day; empty disables aging.
    sed -i -E 's/^([^:]*:[^:]*):[0-9]*:/\1::/' "$R/etc/shadow"
    # Later `apt-get install`s in derived images skip docs too.
    mkdir -p "$R/etc/dpkg/dpkg.cfg.d"
    printf '%s\n' 'path-exclude=/usr/share/doc/*' 'path-include=/usr/share/doc/*/copyright' \
        'path-exclude=/usr/share/man/*' 'path-exclude=/usr/share/info/*' \
        'path-exclude=/usr/share/locale/*' >"$R/etc/dpkg/dpkg.cfg.d/01-livepolicy-nodoc"
    [ -x "$R/usr/bin/python3" ] && [ -x "$R/usr/bin/tini" ] || die "python3 or tini missing"
    in_chroot "$R" dpkg-query -W -f '${Package} ${Version}\n' >"$WORK/packages.lock"
    mkdir -p "$BASE"
    mv "$R" "$BASE/rootfs"
    mv "$WORK/packages.lock" "$BASE/packages.lock"
    touch "$BASE/done"
    log "base rootfs in $(elapsed "$t0")s: $(wc -l <"$BASE/packages.lock") packages," \
        "$(du -sh "$BASE/rootfs" | cut -f1)"
fi

BASE_LAYER="$BASE/layer-$SOURCE_DATE_EPOCH.tar.gz"
if [ "$FORCE" -eq 1 ] || [ ! -f "$BASE_LAYER.json" ]; then
    t0=$EPOCHREALTIME
    rm -f "$BASE"/layer-*
    python3 "$OCI" layer --root "$BASE/rootfs" --epoch "$SOURCE_DATE_EPOCH" \
        --out "$BASE_LAYER" >/dev/null
    log "base layer in $(elapsed "$t0")s: $(du -h "$BASE_LAYER" | cut -f1)"
fi

# ---------------------------------------------------------------------------------------
# 2. The app layer: a copy of the base with the venv, CRIU and ctr added.
# ---------------------------------------------------------------------------------------
t0=$EPOCHREALTIME
rm -rf "$WORK" && mkdir -p "$WORK"
R="$WORK/rootfs"
cp -a "$BASE/rootfs" "$R"
B="$R/tmp/build"
mkdir -p "$B/wheelhouse" "$IMG/wheelhouse"
cp "$WHEEL" "$B/"
WHEEL_IN="/tmp/build/$(basename "$WHEEL")"
# This machine's TLS egress may re-sign certificates: pip in the chroot trusts what the host
# trusts (only while building: /tmp is not part of the image).
cp /etc/ssl/certs/ca-certificates.crt "$B/host-ca.crt"
cp -L /etc/resolv.conf "$R/etc/resolv.conf" # name resolution for pip (/etc is not in layer 2)
PIP=(/usr/bin/env PIP_CERT=/tmp/build/host-ca.crt PIP_DISABLE_PIP_VERSION_CHECK=1
    PIP_NO_CACHE_DIR=1 PIP_NO_INPUT=1 /opt/livepolicy/bin/pip)
in_chroot "$R" python3 -m venv /opt/livepolicy >&2 || die "python3 -m venv failed"

if [ "$RELOCK" -eq 1 ] || [ ! -f "$LOCK" ]; then
    log "resolving the runtime dependencies into $LOCK"
    in_chroot "$R" "${PIP[@]}" install --quiet --dry-run --ignore-installed --only-binary :all: \
        --report /tmp/build/report.json "$WHEEL_IN" >&2 || die "pip could not resolve"
    python3 - "$B/report.json" "$LOCK" <<'EOF'
import json, sys
report = json.load(open(sys.argv[1]))
lines = ["# Runtime dependencies of the livepolicy image, pinned with their hashes (wheels for",
         "# the image's CPython 3.11, manylinux x86_64). Made by scripts/build-image.sh --lock;",
         "# pyproject.toml keeps the ranges, this file the exact versions the image ships."]
for item in sorted(report["install"], key=lambda i: i["metadata"]["name"].lower()):
    name = item["metadata"]["name"]
    if name.lower() == "livepolicy":
        continue
    sha = item["download_info"]["archive_info"]["hashes"]["sha256"]
    lines.append(f"{name}=={item['metadata']['version']} --hash=sha256:{sha}")
open(sys.argv[2], "w").write("\n".join(lines) + "\n")
EOF
    # The key covers the lock file: recompute it now that it is written.
    KEY=$( (
        echo "base=$BASE_KEY epoch=$SOURCE_DATE_EPOCH ref=$REF wheel=$WHEEL_HASH ctr=$CTR_HASH"
        echo "$CRIU_STAMP"
        cat "$LOCK"
        cat "$0" "$OCI"
    ) | sha)
fi
cp "$LOCK" "$B/requirements.txt"

# Dependencies from the local wheelhouse when it has them all, else from PyPI into it.
install_deps() {
    in_chroot "$R" "${PIP[@]}" install --quiet --no-compile --no-deps --require-hashes \
        --only-binary :all: "$@" -r /tmp/build/requirements.txt >&2
}
cp -a "$IMG/wheelhouse/." "$B/wheelhouse/"
if ! install_deps --no-index --find-links /tmp/build/wheelhouse 2>/dev/null; then
    log "downloading the dependencies of $LOCK"
    in_chroot "$R" "${PIP[@]}" download --quiet --no-deps --require-hashes --only-binary :all: \
        -d /tmp/build/wheelhouse -r /tmp/build/requirements.txt >&2 || die "pip download failed"
    cp -a "$B/wheelhouse/." "$IMG/wheelhouse/"
    install_deps --no-index --find-links /tmp/build/wheelhouse || die "pip install failed"
fi
in_chroot "$R" "${PIP[@]}" install --quiet --no-compile --no-deps --no-index "$WHEEL_IN" >&2 ||
    die "installing the wheel failed"
in_chroot "$R" "${PIP[@]}" check >&2 || die "pip check: $LOCK does not satisfy the wheel"
# pip and setuptools only install; the image runs nothing of them.
in_chroot "$R" "${PIP[@]}" uninstall --quiet --yes pip setuptools >&2
rm -rf "$R/opt/livepolicy/bin/"pip* "$R/opt/livepolicy/bin/"[Aa]ctivate*
find "$R/opt/livepolicy" -name __pycache__ -type d -prune -exec rm -rf {} +
in_chroot "$R" /usr/bin/python3 -m compileall -q -j 1 --invalidation-mode unchecked-hash \
    /opt/livepolicy/lib >&2 || die "compileall failed"
ln -sfn /opt/livepolicy/bin/livepolicy "$R/usr/local/bin/livepolicy"

# CRIU: setup-criu.sh's prefix (Debian sid's criu and its own glibc) in /opt/criu.
cp -a "$CRIU_ROOT/prefix" "$R/opt/criu"
rm -rf "$R/opt/criu/usr/share/doc" "$R/opt/criu/usr/share/man" "$R/opt/criu/usr/share/locale" \
    "$R/opt/criu/usr/share/info" "$R/opt/criu/usr/share/lintian"
cp "$CRIU_ROOT/packages.txt" "$R/opt/criu/packages.txt"
cat >"$R/usr/local/bin/criu" <<EOF
#!/bin/sh
# Debian sid's criu ($(sed -n 's/^criu=//p' "$CRIU_ROOT/installed")) from /opt/criu, run with that prefix's own glibc
# (Debian 12's is too old for it); made by livepolicy scripts/build-image.sh.
P=/opt/criu
exec "\$P/usr/lib/$MULTIARCH/ld-linux-x86-64.so.2" --argv0 "\$0" \\
    --library-path "\$P/usr/lib/$MULTIARCH:/lib/$MULTIARCH" "\$P/usr/sbin/criu" "\$@"
EOF
chmod 755 "$R/usr/local/bin/criu"
[ -n "$CTR" ] && install -m 755 "$CTR" "$R/usr/local/bin/ctr"

# The image runs as any uid: everything must be readable (and directories searchable).
if find "$R/opt" "$R/usr/local" ! -perm -o+r -print -quit | grep -q .; then
    die "files in the app layer are not world-readable: $(find "$R/opt" "$R/usr/local" ! -perm -o+r | head -n3)"
fi
in_chroot "$R" /usr/local/bin/livepolicy --help >/dev/null || die "livepolicy --help fails in the rootfs"
in_chroot "$R" /usr/local/bin/criu --version >/dev/null || die "criu --version fails in the rootfs"
rm -rf "$R/tmp/build" "$R/etc/resolv.conf"

python3 "$OCI" layer --root "$R" --path opt/livepolicy --path opt/criu --path usr/local/bin \
    --epoch "$SOURCE_DATE_EPOCH" --out "$WORK/app.tar.gz" >/dev/null
log "app layer in $(elapsed "$t0")s: $(du -h "$WORK/app.tar.gz" | cut -f1)"

# ---------------------------------------------------------------------------------------
# 3. The image.
# ---------------------------------------------------------------------------------------
CTR_NOTE="no ctr"
[ -n "$CTR" ] && CTR_NOTE="ctr $("$CTR" --version 2>/dev/null | awk '{print $3}')"
DIGEST=$(python3 "$OCI" image --layer "$BASE_LAYER.json" --layer "$WORK/app.tar.gz.json" \
    --ref "$REF" --epoch "$SOURCE_DATE_EPOCH" \
    --entrypoint '["/usr/bin/tini","--","livepolicy"]' --cmd '["--help"]' \
    --env PATH=/opt/livepolicy/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    --env LANG=C.UTF-8 --env PYTHONDONTWRITEBYTECODE=1 --env LIVEPOLICY_CRIU=/usr/local/bin/criu \
    --label org.opencontainers.image.title=livepolicy \
    --label org.opencontainers.image.version="$VERSION" \
    --label org.opencontainers.image.licenses=Apache-2.0 \
    --history "debootstrap --variant=minbase $SUITE + deploy/image/packages.txt" \
    --history "livepolicy $VERSION venv in /opt/livepolicy, criu in /opt/criu, $CTR_NOTE" \
    --out "$OUT")
python3 "$OCI" verify "$OUT" >/dev/null || die "the written image does not verify"
printf 'key=%s\ndigest=%s\nref=%s\n' "$KEY" "$DIGEST" "$REF" >"$STAMP"
log "image $REF ($DIGEST): $OUT, $(du -h "$OUT" | cut -f1), built in $(elapsed "$t_start")s"
echo "$OUT"
echo "$REF"
echo "$DIGEST"
