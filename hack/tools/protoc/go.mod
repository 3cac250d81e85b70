// Wrapper module: protoc plugins for `make generate` (protoc itself comes
// from Debian's protobuf-compiler).
module github.com/weft-mesh/weft/hack/tools/protoc

go 1.26

tool (
	google.golang.org/grpc/cmd/protoc-gen-go-grpc
	google.golang.org/protobuf/cmd/protoc-gen-go
)

require (
	google.golang.org/grpc/cmd/protoc-gen-go-grpc v1.6.2 // indirect
	google.golang.org/protobuf v1.36.12 // indirect
)
