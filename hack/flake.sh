#!/usr/bin/env bash
# make flake: runs the unit tests N times (default 20) in shuffled order
# with the race detector and lists every test that failed at least once,
# with how often. Exits non-zero when any did.
set -uo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
n=${1:-20}
log=$(mktemp)
trap 'rm -f "$log"' EXIT
echo "flake: go test -short -race -shuffle=on -count=$n ./... (output in $log while it runs)"
go test -short -race -shuffle=on -count="$n" ./... >"$log" 2>&1
status=$?
failed=$(grep -E '^\s*--- FAIL: ' "$log" | sed -E 's/^\s*--- FAIL: ([^ ]+).*/\1/' | sort | uniq -c | sort -rn)
if [[ -z $failed ]]; then
	if ((status != 0)); then
		echo "flake: go test failed without a failing test (build error?):" >&2
		tail -30 "$log" >&2
		exit 1
	fi
	echo "flake: no test failed in $n runs"
	exit 0
fi
echo "flake: tests that failed at least once in $n runs (count test):"
echo "$failed"
grep -E '^(FAIL|ok)\s' "$log" | grep '^FAIL' | sort | uniq -c
exit 1
