#!/usr/bin/env bash
# make demo: a local cluster with Bookinfo deployed, left running for you.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
BIN=${BIN:-$root/_output/bin}
KUBE_ASSETS=${KUBE_ASSETS:-$root/_output/kube-assets/bin}
name=${DEMO_CLUSTER:-weft}
state=$root/_output/clusters/$name
kubectl="$KUBE_ASSETS/kubectl"

step() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }

if [[ $(id -u) != 0 ]]; then
	echo "make demo needs root: the local cluster creates network namespaces, mounts and cgroups" >&2
	exit 1
fi

step "Local cluster '$name' (real kube-apiserver, etcd, controllers; nodes are network namespaces)"
if "$BIN/weft-cluster" status --name "$name" --state-dir "$state" >/dev/null 2>&1; then
	echo "cluster '$name' is already up: reusing it (make demo-down to start afresh)"
else
	"$BIN/weft-cluster" up --name "$name" --state-dir "$state" \
		--assets-dir "$KUBE_ASSETS" --bin-dir "$BIN" \
		--image-map "$root/samples/bookinfo/images.yaml" --image-map "$root/hack/local-images.yaml"
fi
export KUBECONFIG=$state/kubeconfig
"$kubectl" get nodes -o wide

step "Install the mesh control plane with Helm (charts/base, charts/control)"
helm="$KUBE_ASSETS/helm"
"$helm" upgrade --install weft-base charts/base
"$helm" upgrade --install weft-control charts/control -n weft-system --create-namespace
"$kubectl" -n weft-system rollout status deployment/weft-control --timeout=120s
"$kubectl" -n weft-system get pods -o wide

step "Deploy Bookinfo (samples/bookinfo/platform/kube/bookinfo.yaml, as in Istio's tutorial) and a curl client"
"$kubectl" apply -f samples/bookinfo/platform/kube/bookinfo.yaml
"$kubectl" apply -f samples/curl/curl.yaml
"$kubectl" wait --for=condition=Available deployment --all --timeout=180s
"$kubectl" get pods -o wide

step "Call productpage from inside the cluster (the tutorial's check)"
ratings=$("$kubectl" get pod -l app=ratings -o jsonpath='{.items[0].metadata.name}')
echo "\$ kubectl exec $ratings -c ratings -- curl -sS productpage:9080/productpage | grep -o '<title>.*</title>'"
"$kubectl" exec "$ratings" -c ratings -- curl -sS productpage:9080/productpage | grep -o "<title>.*</title>"

step "Enrol the namespace: the control plane now describes every Bookinfo pod with its SPIFFE identity"
"$kubectl" label namespace default istio.io/dataplane-mode=ambient --overwrite
echo "trust bundle published to the namespace by the control plane's CA:"
"$kubectl" get configmap weft-ca-root-cert -o jsonpath='{.data.root-cert\.pem}' | head -3
echo "  ..."
echo "(the node agent that captures traffic arrives with the next milestone; traffic below is still plain kube-proxy)"

step "Reviews versions answering through the Service"
"$kubectl" exec deploy/curl -- sh -c 'for i in $(seq 1 12); do curl -sS reviews:9080/reviews/0; echo; done' |
	grep -o '"version":"v[0-9]"' | sort | uniq -c

cat <<EOT

The cluster is running. Try:

  export KUBECONFIG=$KUBECONFIG
  export PATH=$KUBE_ASSETS:\$PATH      # kubectl and helm matching the cluster (v1.37)
  kubectl get pods -o wide
  kubectl exec deploy/curl -- curl -sS productpage:9080/productpage | grep -o '<title>.*</title>'
  kubectl logs deploy/productpage-v1

  $BIN/weft-cluster status --name $name
  make demo-down                     # stop it and remove everything it made
EOT
