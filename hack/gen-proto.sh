#!/usr/bin/env bash
# Regenerates the Go code of Weft's protobufs under api/ (committed, so that
# building needs no protoc). Needs protoc (Debian: protobuf-compiler); the
# Go plugins come from hack/tools/protoc.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
command -v protoc >/dev/null || { echo "protoc missing: apt-get install protobuf-compiler" >&2; exit 1; }
plugins=$root/_output/tools
mkdir -p "$plugins"
(cd hack/tools/protoc && CGO_ENABLED=0 go build -o "$plugins/" \
	google.golang.org/protobuf/cmd/protoc-gen-go google.golang.org/grpc/cmd/protoc-gen-go-grpc)
mapfile -t protos < <(find api -name '*.proto' | sort)
PATH=$plugins:$PATH protoc -I . \
	--go_out=. --go_opt=module=github.com/weft-mesh/weft \
	--go-grpc_out=. --go-grpc_opt=module=github.com/weft-mesh/weft \
	"${protos[@]}"
echo "generated: ${protos[*]}"
