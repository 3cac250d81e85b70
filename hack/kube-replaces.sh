#!/usr/bin/env bash
# Prints the replace block hack/tools/kube/go.mod needs: k8s.io/kubernetes
# points every staging module at ./staging, so each must be replaced by its
# published version. Usage: hack/kube-replaces.sh v1.37.1
set -euo pipefail
version=${1:?usage: $0 vX.Y.Z}
staging=v0.${version#v1.}
modfile=$(mktemp)
trap 'rm -f "$modfile"' EXIT
# `go mod download -json` fetches the module's go.mod through the module proxy.
gomod=$(cd "$(mktemp -d)" && go mod download -json "k8s.io/kubernetes@$version" | sed -n 's/.*"GoMod": "\(.*\)",/\1/p')
cp "$gomod" "$modfile"
echo "replace ("
grep -E '^\s+k8s.io/[^ ]+ => ./staging' "$modfile" | awk -v v="$staging" '{print "\t"$1" => "$1" "v}'
echo ")"
