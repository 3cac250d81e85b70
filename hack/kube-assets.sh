#!/usr/bin/env bash
# Builds the local cluster's third-party binaries from the Go module proxy into
# _output/kube-assets/bin: Kubernetes control plane + kube-proxy + kubectl,
# etcd, the CNI reference plugins, CoreDNS and helm. Each comes from a wrapper
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

want=$(stamp_of)
if [[ -f $out/stamp && $(cat "$out/stamp") == "$want" ]]; then
	echo "kube-assets: up to date ($bin)"
	exit 0
fi

mkdir -p "$bin"
rm -f "$out/stamp"
export CGO_ENABLED=0

build() { # module, ldflags, packages...
	local mod=$1 ldflags=$2
	shift 2
	echo "kube-assets: building $* ($mod)"
	(cd "$tools/$mod" && go build -trimpath -ldflags "$ldflags" -o "$bin/" "$@")
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

echo "$want" >"$out/stamp"
echo "kube-assets: done ($bin)"
