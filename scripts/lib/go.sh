# Shared by the scripts that build Go binaries from the Go module proxy (source it).

# require_go MIN WHAT: exit unless the machine's own Go is at least MIN, which WHAT needs
# (GOTOOLCHAIN=local: a build must never download another toolchain).
require_go() {
  local min="$1" what="$2" have
  command -v go >/dev/null || { echo "error: 'go' not found; Go >= $min is needed" >&2; exit 1; }
  have="$(GOTOOLCHAIN=local go env GOVERSION)"; have="${have#go}"
  if [[ "$(printf '%s\n%s\n' "$min" "$have" | sort -V | head -n1)" != "$min" ]]; then
    echo "error: Go $have is older than $min, which $what needs" >&2
    exit 1
  fi
}
