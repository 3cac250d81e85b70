#!/usr/bin/env bash
# Builds the local cluster's third-party binaries from the Go module proxy into
# _output/kube-assets/bin: Kubernetes control plane + kube-proxy + kubectl,
# etcd, the CNI reference plugins, CoreDNS, helm, Prometheus (the image of
# samples/addons/prometheus.yaml in the local cluster) and the sample
# applications of Istio's tasks the e2e runs (Istio's ext-authz server and
# go-httpbin), the Gateway API conformance suite's backends (echo-basic,
# and Istio's echo server and client for its mesh tests) and
# envoyproxy/ratelimit (samples/ratelimit) and Jaeger (samples/addons/jaeger.yaml).
# Each comes from a wrapper
# module under hack/tools/ with its own go.mod/go.sum. A stamp of the inputs
# makes a warm run instant.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
out=${KUBE_ASSETS_DIR:-$root/_output/kube-assets}
bin=$out/bin
kube_version=v1.37.1
tools=$root/hack/tools

stamp_of() {
	{
		go version
		echo "$kube_version"
		cat "$tools"/*/go.mod "$tools"/*/go.sum "$tools"/*/*.go 2>/dev/null
		cat "$0"
	} | sha256sum | cut -d' ' -f1
}

# Jaeger's module versions are v1's: its CHANGELOG pairs each with the v2
# release (`v1.76.0 / v2.13.0`) that the jaeger binary is, which must be
# the image tag of samples/addons/jaeger.yaml (checked on every run: the
# stamp does not cover the manifest).
jaeger_version() {
	local dir v1 v2
	(cd "$tools/jaeger" && go mod download github.com/jaegertracing/jaeger)
	read -r dir v1 < <(cd "$tools/jaeger" && go list -m -f '{{.Dir}} {{.Version}}' github.com/jaegertracing/jaeger)
	v2=$(sed -n "s|^$v1 / \(v2\.[0-9]*\.[0-9]*\) .*|\1|p" "$dir/CHANGELOG.md" | head -1)
	[[ -n $v2 ]] || { echo "kube-assets: $dir/CHANGELOG.md pairs no v2 release with $v1" >&2; return 1; }
	grep -q "image: \"docker.io/jaegertracing/jaeger:${v2#v}\"" "$root/samples/addons/jaeger.yaml" || {
		echo "kube-assets: samples/addons/jaeger.yaml does not run jaegertracing/jaeger:${v2#v}, the Jaeger hack/tools/jaeger builds" >&2
		return 1
	}
	echo "$v2"
}
jv=$(jaeger_version)

want=$(stamp_of)
if [[ -f $out/stamp && $(cat "$out/stamp") == "$want" ]]; then
	echo "kube-assets: up to date ($bin)"
	exit 0
fi

mkdir -p "$bin"
rm -f "$out/stamp"
export CGO_ENABLED=0

# Progress: each step says which module it builds, how many are left and
# how long it took; a long build says it is still going every 30 s.
steps=$(grep -c '^build ' "$0")
step=0
began=$(date +%s)
ticker=
trap '[[ -z $ticker ]] || kill "$ticker" 2>/dev/null' EXIT
dur() { # seconds -> 3m20s
	if (($1 >= 60)); then printf '%dm%02ds' $(($1 / 60)) $(($1 % 60)); else printf '%ds' "$1"; fi
}

build() { # module, ldflags, packages...
	local mod=$1 ldflags=$2 t0 now what
	shift 2
	step=$((step + 1))
	t0=$(date +%s)
	what="$*"
	[[ $what == . ]] && what=hack/tools/$mod
	echo "kube-assets: [$step/$steps] building $mod: $what"
	(while sleep 30 </dev/null >/dev/null 2>&1; do echo "kube-assets: [$step/$steps] still building $mod ($(dur $(($(date +%s) - t0))))"; done) &
	ticker=$!
	(cd "$tools/$mod" && go build -trimpath -ldflags "$ldflags" -o "$bin/" "$@")
	kill "$ticker"
	ticker=
	now=$(date +%s)
	echo "kube-assets: [$step/$steps] $mod built in $(dur $((now - t0))) (total $(dur $((now - began))), $((steps - step)) left)"
}

# The version stamp matters: kubectl and the kubelet skew checks read it.
kv="-s -w -X k8s.io/component-base/version.gitVersion=$kube_version \
 -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=37 \
 -X k8s.io/component-base/version.gitTreeState=clean \
 -X k8s.io/client-go/pkg/version.gitVersion=$kube_version"
build kube "$kv" \
	k8s.io/kubernetes/cmd/kube-apiserver \
	k8s.io/kubernetes/cmd/kube-controller-manager \
	k8s.io/kubernetes/cmd/kube-scheduler \
	k8s.io/kubernetes/cmd/kube-proxy \
	k8s.io/kubernetes/cmd/kubectl
build etcd "-s -w" go.etcd.io/etcd/server/v3
mv -f "$bin/server" "$bin/etcd"
build cni "-s -w" \
	github.com/containernetworking/plugins/plugins/ipam/host-local \
	github.com/containernetworking/plugins/plugins/main/bridge \
	github.com/containernetworking/plugins/plugins/main/loopback \
	github.com/containernetworking/plugins/plugins/main/ptp \
	github.com/containernetworking/plugins/plugins/meta/portmap
build coredns "-s -w" .
build helm "-s -w" helm.sh/helm/v3/cmd/helm
# Prometheus with Kubernetes service discovery only (upstream's build tags,
# plugins/plugin_kubernetes.go) and no web UI assets (upstream's
# builtinassets tag left out: the HTTP API works, the UI pages do not).
# Its module versions v0.3MM.P are Prometheus 3.MM.P.
pv=$(cd "$tools/prometheus" && go list -m -f '{{.Version}}' github.com/prometheus/prometheus)
[[ $pv =~ ^v0\.3([0-9]{2})\.([0-9]+)$ ]] || { echo "kube-assets: unexpected prometheus module version $pv" >&2; exit 1; }
pv=3.$((10#${BASH_REMATCH[1]})).${BASH_REMATCH[2]}
build prometheus "-s -w -X github.com/prometheus/common/version.Version=$pv" \
	-tags=remove_all_sd,enable_kubernetes_sd github.com/prometheus/prometheus/cmd/prometheus
# Istio's ext-authz sample server and go-httpbin, the images of
# samples/extauthz/ext-authz.yaml and samples/httpbin/httpbin.yaml (Istio's
# manifests) in the local cluster.
build testapps "-s -w" istio.io/istio/samples/extauthz/cmd/extauthz \
	github.com/mccutchen/go-httpbin/v2/cmd/go-httpbin
# The Gateway API conformance suite's echo backend, the image
# registry.k8s.io/gateway-api/echo-basic of its manifests (make conformance).
build gateway-conformance "-s -w" sigs.k8s.io/gateway-api/conformance/echo-basic
# Istio's echo server and client, the image
# registry.k8s.io/gateway-api/echo-advanced of the suite's mesh manifests
# (Istio's app image), with the files that image has at /cert.crt and
# /cert.key: Istio's public test certificate (tests/testdata/certs/dns,
# Dockerfile.app), taken from the same module.
build echo-advanced "-s -w" istio.io/istio/pkg/test/echo/cmd/server istio.io/istio/pkg/test/echo/cmd/client
mv -f "$bin/server" "$bin/echo-server"
mv -f "$bin/client" "$bin/echo-client"
certs=$(cd "$tools/echo-advanced" && go list -m -f '{{.Dir}}' istio.io/istio)/tests/testdata/certs/dns
cp -f "$certs/cert-chain.pem" "$bin/echo-advanced-cert.crt"
cp -f "$certs/key.pem" "$bin/echo-advanced-cert.key"
# envoyproxy/ratelimit, the rate limit service of
# samples/ratelimit/rate-limit-service.yaml (global rate limit e2e).
build ratelimit "-s -w" github.com/envoyproxy/ratelimit/src/service_cmd
mv -f "$bin/service_cmd" "$bin/ratelimit"
# Jaeger v2, the all-in-one jaeger binary (version checked above).
build jaeger "-s -w -X github.com/jaegertracing/jaeger/internal/version.latestVersion=$jv" \
	github.com/jaegertracing/jaeger/cmd/jaeger

echo "$want" >"$out/stamp"
echo "kube-assets: done in $(dur $(($(date +%s) - began))) ($bin)"
