#!/usr/bin/env bash
# setup-criu.sh: install a CRIU that works on this project's machines.
#
# Debian 12's criu 3.17 fails at start on kernel 6.x (vDSO bounds) and Debian 13's 4.1.1
# fails on any TCP socket; Debian sid's criu (>= 4.2.1) works. It needs a newer glibc than
# Debian 12 has, so it runs from a private prefix with sid's own dynamic loader
# (see shared/design/criu-on-this-machine.md and docs/criu-setup.md).
#
# What it does (idempotent; a second run returns in well under a second):
#   1. installs missing host tools from the machine's own apt sources (nftables, iproute2,
#      util-linux) and raises fs.pipe-max-size to 4 MiB if it is lower (needed by
#      criu --lazy-pages; runtime setting, so checked on every run);
#   2. unless a matching version stamp exists: fetches the package lists of Debian sid into
#      a private apt state directory (the machine's apt sources are never touched), downloads
#      criu and its whole dependency closure from sid with `apt-get download`, unpacks them
#      with `dpkg -x` into a prefix, writes the wrapper bin/criu and checks that
#      `criu check` says "Looks good";
#   3. prints the wrapper's path on stdout (everything else goes to stderr).
#
# Usage: scripts/setup-criu.sh [--force] [--check]
#   --force   reinstall even if the version stamp matches
#   --check   also run `criu check` when already installed
# Environment:
#   LIVEPOLICY_CACHE          cache root (default: $HOME/.cache/livepolicy)
#   LIVEPOLICY_DEBIAN_MIRROR  Debian mirror URI (default: the one the machine's apt uses)
#   LIVEPOLICY_CRIU_SUITE     Debian suite to take criu from (default: sid)
#
# Layout under ${LIVEPOLICY_CACHE:-$HOME/.cache/livepolicy}:
#   criu/bin/criu     the wrapper to call
#   criu/prefix/      the unpacked sid packages
#   criu/installed    version stamp
#   criu/packages.txt the unpacked packages and their versions
#   apt-sid/          private apt state (sources; lists and .debs only while installing)
set -euo pipefail

MIN_VERSION="4.2.1"
LAYOUT=1 # bump when the installed layout or the wrapper changes
PIPE_MAX_SIZE=4194304
MULTIARCH="x86_64-linux-gnu"
LOADER_NAME="ld-linux-x86-64.so.2"

CACHE="${LIVEPOLICY_CACHE:-${HOME:?HOME is not set}/.cache/livepolicy}"
SUITE="${LIVEPOLICY_CRIU_SUITE:-sid}"
ROOT="$CACHE/criu"
APTDIR="$CACHE/apt-$SUITE"
WRAPPER="$ROOT/bin/criu"
STAMP="$ROOT/installed"

FORCE=0
CHECK=0
for arg in "$@"; do
    case "$arg" in
    --force) FORCE=1 ;;
    --check) CHECK=1 ;;
    -h | --help)
        sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'
        exit 0
        ;;
    *)
        echo "setup-criu: unknown argument: $arg (try --help)" >&2
        exit 2
        ;;
    esac
done

log() { echo "setup-criu: $*" >&2; }
die() {
    echo "setup-criu: ERROR: $*" >&2
    exit 1
}

[ "$(id -u)" -eq 0 ] || die "must run as root (apt-get install, sysctl, criu check need it)"
[ "$(uname -m)" = "x86_64" ] || die "only x86_64 is supported (found $(uname -m))"

# ---------------------------------------------------------------------------------------
# 1. Host tools and kernel settings (cheap, checked on every run).
# ---------------------------------------------------------------------------------------
ensure_host_tools() {
    local -a missing=()
    command -v nft >/dev/null 2>&1 || missing+=(nftables)
    command -v ip >/dev/null 2>&1 || missing+=(iproute2)
    if ! command -v nsenter >/dev/null 2>&1 || ! command -v unshare >/dev/null 2>&1 ||
        ! command -v setsid >/dev/null 2>&1; then
        missing+=(util-linux)
    fi
    command -v dpkg-deb >/dev/null 2>&1 || missing+=(dpkg)
    [ "${#missing[@]}" -eq 0 ] && return 0
    log "installing missing host packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    if ! apt-get install -y -q --no-install-recommends "${missing[@]}" >&2; then
        log "apt-get install failed; running apt-get update first"
        apt-get update -q >&2
        apt-get install -y -q --no-install-recommends "${missing[@]}" >&2
    fi
}

ensure_pipe_max_size() {
    local cur
    cur=$(cat /proc/sys/fs/pipe-max-size)
    if [ "$cur" -lt "$PIPE_MAX_SIZE" ]; then
        sysctl -q -w "fs.pipe-max-size=$PIPE_MAX_SIZE" >/dev/null
        log "raised fs.pipe-max-size from $cur to $PIPE_MAX_SIZE (criu --lazy-pages needs it;" \
            "runtime setting, lost on reboot, this script sets it again)"
    fi
}

ensure_host_tools
ensure_pipe_max_size

# Run the criu of a prefix through that prefix's own dynamic loader.
run_prefix_criu() {
    local prefix="$1"
    shift
    "$prefix/usr/lib/$MULTIARCH/$LOADER_NAME" \
        --library-path "$prefix/usr/lib/$MULTIARCH:/lib/$MULTIARCH" \
        "$prefix/usr/sbin/criu" "$@"
}

criu_check_ok() { # criu_check_ok CMD...: runs `CMD check`, true if it says Looks good
    local out
    out=$("$@" check 2>&1) || true
    if grep -q "Looks good" <<<"$out"; then
        return 0
    fi
    log "criu check output:"
    printf '%s\n' "$out" | sed 's/^/    /' >&2
    return 1
}

# ---------------------------------------------------------------------------------------
# 2. Fast path: already installed.
# ---------------------------------------------------------------------------------------
stamp_ok() {
    [ -f "$STAMP" ] && [ -x "$WRAPPER" ] || return 1
    grep -qx "layout=$LAYOUT" "$STAMP" && grep -qx "suite=$SUITE" "$STAMP" || return 1
    local want have
    want=$(sed -n 's/^criu_upstream=//p' "$STAMP")
    have=$("$WRAPPER" --version 2>/dev/null | sed -n 's/^Version: *//p') || return 1
    [ -n "$want" ] && [ "$have" = "$want" ]
}

mkdir -p "$CACHE"
# Serialise concurrent runs (e.g. parallel test workers).
exec 9>"$CACHE/.criu-setup.lock"
flock 9

if [ "$FORCE" -eq 0 ] && stamp_ok; then
    if [ "$CHECK" -eq 1 ]; then
        criu_check_ok "$WRAPPER" || die "installed criu no longer passes 'criu check'"
        log "criu check: Looks good"
    fi
    log "already installed: $(sed -n 's/^criu=//p' "$STAMP") (use --force to reinstall)"
    echo "$WRAPPER"
    exit 0
fi

# ---------------------------------------------------------------------------------------
# 3. Install.
# ---------------------------------------------------------------------------------------
elapsed() { awk -v a="$1" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }'; }
t_start=$EPOCHREALTIME

# The Debian mirror the machine's own apt configuration uses (never modified, only read).
find_mirror() {
    if [ -n "${LIVEPOLICY_DEBIAN_MIRROR:-}" ]; then
        echo "${LIVEPOLICY_DEBIAN_MIRROR%/}"
        return
    fi
    local codename uri
    # shellcheck disable=SC1091
    codename=$(. /etc/os-release && echo "${VERSION_CODENAME:-}")
    # apt-get indextargets lists every configured source, parsed by apt itself.
    # shellcheck disable=SC2016 # $(...) are apt's format fields, not shell expansions
    uri=$(apt-get indextargets --format '$(RELEASE) $(REPO_URI)' 'Identifier: Packages' 2>/dev/null |
        awk -v c="$codename" '$1 == c && $2 !~ /security/ { print $2; exit }')
    if [ -z "$uri" ]; then
        # shellcheck disable=SC2016
        uri=$(apt-get indextargets --format '$(REPO_URI)' 'Identifier: Packages' 2>/dev/null |
            grep -E '/debian/?$' | grep -v security | head -n1 || true)
    fi
    if [ -z "$uri" ]; then
        uri=$(grep -rhoE '(https?|file)://[^ ]*/debian/?( |$)' /etc/apt/sources.list \
            /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources 2>/dev/null |
            head -n1 || true)
    fi
    uri=$(echo "${uri:-http://deb.debian.org/debian}" | tr -d ' ')
    echo "${uri%/}"
}

MIRROR=$(find_mirror)
KEYRING=/usr/share/keyrings/debian-archive-keyring.gpg
[ -r "$KEYRING" ] || die "$KEYRING missing (package debian-archive-keyring)"
log "taking criu from Debian $SUITE at $MIRROR (private apt state in $APTDIR)"

mkdir -p "$APTDIR/sources" "$APTDIR/lists/partial" "$APTDIR/cache/archives/partial" "$APTDIR/debs"
cat >"$APTDIR/sources/debian-$SUITE.sources" <<EOF
# Written by livepolicy scripts/setup-criu.sh: private apt state, never used by the system.
Types: deb
URIs: $MIRROR
Suites: $SUITE
Components: main
Architectures: amd64
Targets: Packages
Signed-By: $KEYRING
EOF

APT_OPTS=(
    -o "Dir::Etc::SourceList=/dev/null"
    -o "Dir::Etc::SourceParts=$APTDIR/sources"
    -o "Dir::State::Lists=$APTDIR/lists"
    -o "Dir::Cache=$APTDIR/cache"
    -o "Dir::Cache::pkgcache=$APTDIR/cache/pkgcache.bin"
    -o "Dir::Cache::srcpkgcache=$APTDIR/cache/srcpkgcache.bin"
    -o "APT::Architecture=amd64"
    -o "APT::Architectures::=amd64"
    -o "APT::Sandbox::User=root"
    -o "Acquire::Languages=none"
)

t0=$EPOCHREALTIME
apt-get "${APT_OPTS[@]}" -q update >&2 || die "apt-get update of the private $SUITE lists failed"
t_update=$(elapsed "$t0")

candidate=$(apt-cache "${APT_OPTS[@]}" policy criu | sed -n 's/^ *Candidate: *//p')
if [ -z "$candidate" ] || [ "$candidate" = "(none)" ]; then
    die "no criu package in Debian $SUITE"
fi
dpkg --compare-versions "$candidate" ge "$MIN_VERSION" ||
    die "Debian $SUITE has criu $candidate, need >= $MIN_VERSION"

# criu plus its whole run-time dependency closure from the same suite: a consistent set of
# libraries (glibc, gnutls, libnl, nftables...) instead of a mix with the host's older ones.
mapfile -t pkgs < <(apt-cache "${APT_OPTS[@]}" depends --recurse --no-recommends --no-suggests \
    --no-conflicts --no-breaks --no-replaces --no-enhances criu |
    grep -E '^[a-z0-9][a-z0-9+.-]*$' | sort -u)
[ "${#pkgs[@]}" -gt 0 ] || die "could not resolve criu's dependencies"
log "criu $candidate: downloading ${#pkgs[@]} packages: ${pkgs[*]}"

t0=$EPOCHREALTIME
rm -f "$APTDIR/debs/"*.deb
(cd "$APTDIR/debs" && apt-get "${APT_OPTS[@]}" -q download "${pkgs[@]}" >&2) ||
    die "apt-get download failed"
t_download=$(elapsed "$t0")

# Unpack into a staging directory, verify, then move into place.
STAGE="$CACHE/.criu-staging.$$"
rm -rf "$STAGE"
mkdir -p "$STAGE/prefix" "$STAGE/bin"
trap 'rm -rf "$STAGE"' EXIT
: >"$STAGE/packages.txt"
for deb in "$APTDIR/debs/"*.deb; do
    dpkg -x "$deb" "$STAGE/prefix"
    dpkg-deb -f "$deb" Package Version | paste -sd' ' | sed 's/Package: //; s/ Version: / /' \
        >>"$STAGE/packages.txt"
done
# Debian 12 (and usrmerge-less trees) may keep libraries in /lib: make sure the
# merged-/usr layout is complete in the prefix.
loader="$STAGE/prefix/usr/lib/$MULTIARCH/$LOADER_NAME"
if [ ! -e "$loader" ] && [ -e "$STAGE/prefix/lib/$MULTIARCH/$LOADER_NAME" ]; then
    mkdir -p "$STAGE/prefix/usr/lib/$MULTIARCH"
    cp -a "$STAGE/prefix/lib/$MULTIARCH/." "$STAGE/prefix/usr/lib/$MULTIARCH/"
fi
[ -x "$loader" ] || die "no dynamic loader in the unpacked packages ($loader)"
[ -x "$STAGE/prefix/usr/sbin/criu" ] || die "no usr/sbin/criu in the unpacked packages"

# Every library must resolve, with the right symbol versions.
deps=$("$loader" --library-path "$STAGE/prefix/usr/lib/$MULTIARCH:/lib/$MULTIARCH" \
    --list "$STAGE/prefix/usr/sbin/criu" 2>&1) || die "criu's libraries do not resolve:"$'\n'"$deps"
if grep -qE 'not found' <<<"$deps"; then
    die "criu's libraries do not resolve:"$'\n'"$deps"
fi

upstream=$(run_prefix_criu "$STAGE/prefix" --version | sed -n 's/^Version: *//p')
[ -n "$upstream" ] || die "unpacked criu does not run"
dpkg --compare-versions "$upstream" ge "$MIN_VERSION" || die "criu $upstream < $MIN_VERSION"

# The wrapper. --argv0 keeps argv[0] pointing at the wrapper, so anything that re-executes
# argv[0] goes through it again.
prefix_q=$(printf '%q' "$ROOT/prefix")
cat >"$STAGE/bin/criu" <<EOF
#!/bin/bash
# Generated by livepolicy scripts/setup-criu.sh: Debian $SUITE criu $candidate run from a
# private prefix with that prefix's own glibc (Debian 12's is too old for it).
P=$prefix_q
exec "\$P/usr/lib/$MULTIARCH/$LOADER_NAME" --argv0 "\$0" \\
    --library-path "\$P/usr/lib/$MULTIARCH:/lib/$MULTIARCH" "\$P/usr/sbin/criu" "\$@"
EOF
chmod 755 "$STAGE/bin/criu"

criu_check_ok run_prefix_criu "$STAGE/prefix" || die "criu $candidate does not pass 'criu check'"

cat >"$STAGE/installed" <<EOF
criu=$candidate
criu_upstream=$upstream
suite=$SUITE
mirror=$MIRROR
layout=$LAYOUT
installed_at=$(date -u +%Y-%m-%dT%H:%M:%SZ)
EOF

rm -rf "$ROOT.old"
[ -e "$ROOT" ] && mv "$ROOT" "$ROOT.old"
mv "$STAGE" "$ROOT"
trap - EXIT
# The private lists and caches (~120 MB) are only needed while installing.
rm -rf "$ROOT.old" "$APTDIR/debs" "$APTDIR/lists" "$APTDIR/cache"

# Final check through the wrapper itself.
"$WRAPPER" --version >&2
criu_check_ok "$WRAPPER" || die "'$WRAPPER check' failed"
t_total=$(elapsed "$t_start")
log "criu check: Looks good"
log "installed criu $candidate (upstream $upstream) in ${t_total}s" \
    "(lists ${t_update}s, download ${t_download}s)"
echo "$WRAPPER"
