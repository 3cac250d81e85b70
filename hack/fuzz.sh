#!/usr/bin/env bash
# make fuzz: runs every Go fuzz target (func FuzzX(f *testing.F) in a
# _test.go file) for FUZZTIME each (default 1m), one after the other, in
# its own package, and prints a summary. FUZZ (a regular expression)
# selects targets by name; FUZZPARALLEL sets go test -parallel (fuzzing
# workers; default GOMAXPROCS). A failing input is written to the
# package's testdata/fuzz/<target>/ and from then on runs in plain go test:
# fix the bug and commit it as a regression case. Exits non-zero when any
# target failed.
set -uo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
fuzztime=${FUZZTIME:-1m}
select=${FUZZ:-.}
parallel=()
if [[ -n ${FUZZPARALLEL:-} ]]; then
	parallel=(-parallel "$FUZZPARALLEL")
fi

# "<dir> <target>" for every fuzz target of the main module.
targets=$(grep -rE --include='*_test.go' --exclude-dir=_output --exclude-dir=hack --exclude-dir=testdata \
	'^func Fuzz[A-Za-z0-9_]*\(f \*testing\.F\)' . |
	sed -E 's|^\./(.*)/[^/]*_test\.go:func (Fuzz[A-Za-z0-9_]*)\(.*|\1 \2|' | sort)
if [[ -z $targets ]]; then
	echo "fuzz: no fuzz targets found" >&2
	exit 1
fi

failed=()
summary=()
start=$(date +%s)
while read -r dir name; do
	[[ $name =~ $select ]] || continue
	echo "=== fuzz: $name in ./$dir for $fuzztime"
	t0=$(date +%s)
	if go test -run='^$' -fuzz="^${name}\$" -fuzztime="$fuzztime" "${parallel[@]}" "./$dir"; then
		status=ok
	else
		status=FAIL
		failed+=("$name (./$dir)")
	fi
	summary+=("$(printf '%-4s %4ss  %-24s ./%s' "$status" "$(($(date +%s) - t0))" "$name" "$dir")")
done <<<"$targets"

if ((${#summary[@]} == 0)); then
	echo "fuzz: no fuzz target matches FUZZ=$select" >&2
	exit 1
fi
echo "=== fuzz summary (FUZZTIME=$fuzztime, $(($(date +%s) - start))s in all)"
printf '%s\n' "${summary[@]}"
if ((${#failed[@]} > 0)); then
	echo "fuzz: ${#failed[@]} target(s) failed: ${failed[*]}" >&2
	echo "fuzz: failing inputs are in each package's testdata/fuzz/<target>/" >&2
	exit 1
fi
