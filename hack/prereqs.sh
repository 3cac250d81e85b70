#!/usr/bin/env bash
# The prerequisites step of `make demo`, `make test`, `make e2e` and .ci/run:
# checks that Go is at least go.mod's version and that every host command in
# hack/prereqs.txt is installed. As root it installs the Debian packages of
# the missing commands (and says which); otherwise, or when apt fails, it
# exits 1 with one line naming the missing commands and their packages.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
list=$root/hack/prereqs.txt
# Most of these live in sbin, which a non-root PATH often lacks.
PATH=$PATH:/usr/local/sbin:/usr/sbin:/sbin

fail() {
	echo "prereqs: $*" >&2
	exit 1
}

# Go: the installed toolchain (GOTOOLCHAIN=local: not one go would download).
want_go=$(sed -n 's/^go \([0-9][0-9.]*\)$/\1/p' "$root/go.mod")
have_go=$(GOTOOLCHAIN=local go env GOVERSION 2>/dev/null) || fail "go is not installed: install Go $want_go or newer (go.mod)"
have_go=${have_go#go}
if [[ $(printf '%s\n%s\n' "$want_go" "$have_go" | sort -V | head -n1) != "$want_go" ]]; then
	fail "go $have_go is older than go.mod's go $want_go: install Go $want_go or newer"
fi

# missing: sets cmds and pkgs to the absent commands and their packages.
missing() {
	cmds=() pkgs=()
	local cmd pkg _
	while read -r cmd pkg _; do
		[[ -z $cmd || $cmd == \#* ]] && continue
		command -v "$cmd" >/dev/null 2>&1 && continue
		cmds+=("$cmd")
		[[ " ${pkgs[*]} " == *" $pkg "* ]] || pkgs+=("$pkg")
	done <"$list"
}

missing
if ((${#cmds[@]} == 0)); then
	echo "prereqs: ok (go $have_go; $(grep -c '^[^#[:space:]]' "$list") host commands present)"
	exit 0
fi
what="missing commands: ${cmds[*]} (Debian packages: ${pkgs[*]})"
[[ $(id -u) == 0 ]] || fail "$what; run hack/prereqs.sh as root, or: sudo apt-get install ${pkgs[*]}"
command -v apt-get >/dev/null || fail "$what; no apt-get on this machine: install them with its package manager"

echo "prereqs: $what"
echo "prereqs: installing ${pkgs[*]}"
apt-get update -qq || fail "$what; apt-get update failed"
DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${pkgs[@]}" ||
	fail "$what; apt-get install ${pkgs[*]} failed"
missing
((${#cmds[@]} == 0)) || fail "still missing after installing: ${cmds[*]} (packages ${pkgs[*]})"
echo "prereqs: installed ${what#missing commands: }"
