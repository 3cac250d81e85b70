// Wrapper module: the sample applications of Istio's tasks that the e2e
// runs unchanged, mapped as their images in the local cluster: Istio's
// ext-authz sample (registry.istio.io/testing/ext-authz, samples/extauthz)
// and go-httpbin (docker.io/mccutchen/go-httpbin, samples/httpbin).
// hack/kube-assets.sh builds them.
module github.com/weft-mesh/weft/hack/tools/testapps

go 1.26.7

tool (
	github.com/mccutchen/go-httpbin/v2/cmd/go-httpbin
	istio.io/istio/samples/extauthz/cmd/extauthz
)

require (
	github.com/cncf/xds/go v0.0.0-20260202195803-dba9d589def2 // indirect
	github.com/envoyproxy/go-control-plane/envoy v1.37.1-0.20260713214202-ca8ce173c36f // indirect
	github.com/envoyproxy/protoc-gen-validate v1.3.3 // indirect
	github.com/mccutchen/go-httpbin/v2 v2.26.0 // indirect
	github.com/planetscale/vtprotobuf v0.6.1-0.20240409071808-615f978279ca // indirect
	golang.org/x/net v0.55.0 // indirect
	golang.org/x/sys v0.45.0 // indirect
	golang.org/x/text v0.37.0 // indirect
	google.golang.org/genproto/googleapis/rpc v0.0.0-20260427160629-7cedc36a6bc4 // indirect
	google.golang.org/grpc v1.82.0 // indirect
	google.golang.org/protobuf v1.36.12-0.20260120151049-f2248ac996af // indirect
	istio.io/istio v0.0.0-20260827124520-eed52ebb66ad // indirect
)
