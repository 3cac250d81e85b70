// Wrapper module: the Gateway API conformance suite's echo backend
// (sigs.k8s.io/gateway-api/conformance/echo-basic), the image
// registry.k8s.io/gateway-api/echo-basic of the suite's base manifests,
// mapped as that image in the local cluster (e2e/cluster addonsImageMap).
// Pinned to the Gateway API version of the CRDs charts/base ships
// (gateway.networking.k8s.io/bundle-version) and of the suite that
// e2e/conformance_test.go runs (the main module's go.mod).
// hack/kube-assets.sh builds it.
module github.com/weft-mesh/weft/hack/tools/gateway-conformance

go 1.26.0

tool sigs.k8s.io/gateway-api/conformance/echo-basic

require (
	golang.org/x/net v0.55.0 // indirect
	golang.org/x/sys v0.45.0 // indirect
	golang.org/x/text v0.37.0 // indirect
	google.golang.org/genproto/googleapis/rpc v0.0.0-20260427160629-7cedc36a6bc4 // indirect
	google.golang.org/grpc v1.81.1 // indirect
	google.golang.org/protobuf v1.36.12-0.20260120151049-f2248ac996af // indirect
	sigs.k8s.io/gateway-api/conformance v1.6.3 // indirect
)
