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

# ADDONS (make demo ADDONS=prometheus,jaeger): Istio's samples/addons to
# install as well, comma-separated.
ADDONS=${ADDONS:-}
addons=" ${ADDONS//,/ } "
for addon in $addons; do
	case $addon in
	prometheus | jaeger) ;;
	*)
		echo "unknown addon '$addon' in ADDONS: the demo knows prometheus, jaeger" >&2
		exit 1
		;;
	esac
done
# With Jaeger, the waypoints and the ingress gateway send their spans to its
# OTLP/HTTP receiver (docs/guides/telemetry.md#tracing-with-jaeger).
control_tracing=()
gateway_tracing=()
if [[ $addons == *" jaeger "* ]]; then
	collector=http://jaeger-collector.istio-system:4318
	control_tracing=(--set "waypoint.tracing.otlpEndpoint=$collector")
	gateway_tracing=(--set "tracing.otlpEndpoint=$collector")
fi

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

# port_forward <name> <local port> <service> <service port>: kubectl
# port-forward in the background, as `istioctl dashboard` does; demo-down
# stops it (its pid file is <name>.pid).
port_forward() {
	local pid=$state/$1.pid
	if [[ -f $pid ]] && kill -0 "$(cat "$pid")" 2>/dev/null; then
		kill "$(cat "$pid")" 2>/dev/null || true
	fi
	nohup "$kubectl" -n istio-system port-forward "svc/$3" "$2:$4" >"$state/logs/$1-port-forward.log" 2>&1 &
	echo $! >"$pid"
}

step "Install the mesh with Helm (charts/base, charts/control, charts/node-agent)"
helm="$KUBE_ASSETS/helm"
"$helm" upgrade --install weft-base charts/base
"$helm" upgrade --install weft-control charts/control -n weft-system --create-namespace "${control_tracing[@]}"
"$kubectl" -n weft-system rollout status deployment/weft-control --timeout=120s
"$helm" upgrade --install weft-node-agent charts/node-agent -n weft-system
"$kubectl" -n weft-system rollout status daemonset/weft-node-agent --timeout=120s
"$kubectl" -n weft-system get pods -o wide

if [[ $addons == *" jaeger "* ]]; then
	step "Istio's Jaeger addon (kubectl apply -f samples/addons/jaeger.yaml), before the traffic it traces"
	"$kubectl" apply -f samples/addons/jaeger.yaml
fi

step "Deploy Bookinfo (samples/bookinfo/platform/kube/bookinfo.yaml, as in Istio's tutorial) and a curl client"
"$kubectl" apply -f samples/bookinfo/platform/kube/bookinfo.yaml
"$kubectl" apply -f samples/curl/curl.yaml
"$kubectl" wait --for=condition=Available deployment --all --timeout=180s
"$kubectl" get pods -o wide

step "Call productpage from inside the cluster (the tutorial's check)"
ratings=$("$kubectl" get pod -l app=ratings -o jsonpath='{.items[0].metadata.name}')
echo "\$ kubectl exec $ratings -c ratings -- curl -sS productpage:9080/productpage | grep -o '<title>.*</title>'"
# Ready is reported once the process runs (the sample has no readiness
# probe), which can be a moment before it listens: retry briefly.
for i in $(seq 1 20); do
	"$kubectl" exec "$ratings" -c ratings -- curl -sS productpage:9080/productpage 2>/dev/null | grep -o "<title>.*</title>" && break
	((i == 20)) && { echo "productpage does not answer" >&2; exit 1; }
	sleep 0.5
done

step "Enrol the namespace: no pod restarts; each node agent captures its pods with eBPF"
"$kubectl" label namespace default istio.io/dataplane-mode=ambient --overwrite
agents=$("$kubectl" -n weft-system get pods -l app.kubernetes.io/name=weft-node-agent -o jsonpath='{.items[*].metadata.name}')
for i in $(seq 1 30); do
	n=0
	for a in $agents; do
		n=$((n + $("$kubectl" -n weft-system logs "$a" -c node-agent 2>/dev/null | grep -c '"msg":"enrolled pod"' || true)))
	done
	((n >= 7)) && break
	sleep 1
done
echo "pods enrolled by the node agents: $n"
echo "certificates the node agents hold (SPIFFE identities of their pods):"
for a in $agents; do
	"$kubectl" -n weft-system logs "$a" -c node-agent 2>/dev/null | grep -o '"msg":"certificate issued","id":"[^"]*"' | sed 's/.*"id":"/  /; s/"$//' | sort -u
done

step "Traffic now crosses nodes in HBONE mTLS tunnels; the destination sees the caller's identity"
for i in 1 2 3; do
	"$kubectl" exec deploy/curl -- curl -sS -o /dev/null -w 'productpage: HTTP %{http_code}\n' productpage:9080/productpage
done
pp_node=$("$kubectl" get pod -l app=productpage -o jsonpath='{.items[0].status.hostIP}')
echo "istio_tcp_connections_opened_total on productpage's node agent ($pp_node:15020/metrics):"
"$kubectl" exec deploy/curl -- curl -sS "http://$pp_node:15020/metrics" |
	grep '^istio_tcp_connections_opened_total' | grep 'destination_workload="productpage-v1"' |
	grep -o 'source_principal="[^"]*"\|connection_security_policy="[^"]*"\|reporter="[^"]*"' | paste -sd' ' | head -3

step "Expose Bookinfo through the ingress gateway (charts/gateway and the tutorial's bookinfo-gateway.yaml, unchanged)"
"$helm" upgrade --install weft-ingress charts/gateway -n weft-ingress --create-namespace "${gateway_tracing[@]}"
"$kubectl" -n weft-ingress rollout status deployment/weft-ingress --timeout=120s
"$kubectl" apply -f samples/bookinfo/networking/bookinfo-gateway.yaml
for i in $(seq 1 30); do
	INGRESS_HOST=$("$kubectl" -n weft-ingress get service weft-ingress -o jsonpath='{.status.loadBalancer.ingress[0].ip}')
	[[ -n $INGRESS_HOST ]] && break
	sleep 1
done
INGRESS_PORT=$("$kubectl" -n weft-ingress get service weft-ingress -o jsonpath='{.spec.ports[?(@.name=="http2")].port}')
echo "\$ export INGRESS_HOST=\$(kubectl -n weft-ingress get service weft-ingress -o jsonpath='{.status.loadBalancer.ingress[0].ip}')   # $INGRESS_HOST"
echo "\$ export INGRESS_PORT=\$(kubectl -n weft-ingress get service weft-ingress -o jsonpath='{.spec.ports[?(@.name==\"http2\")].port}')   # $INGRESS_PORT"
echo "\$ curl -s http://\$INGRESS_HOST:\$INGRESS_PORT/productpage | grep -o '<title>.*</title>'"
for i in $(seq 1 30); do
	curl -sS -m 5 "http://$INGRESS_HOST:$INGRESS_PORT/productpage" 2>/dev/null | grep -o "<title>.*</title>" && break
	sleep 1
done
echo "an unmatched path: HTTP $(curl -sS -m 5 -o /dev/null -w '%{http_code}' "http://$INGRESS_HOST:$INGRESS_PORT/no-such-page")"

versions() { # versions <n> [user]: which reviews versions answer n requests
	local hdr=""
	[[ -n ${2:-} ]] && hdr="-H 'end-user: $2'"
	"$kubectl" exec deploy/curl -- sh -c "for i in \$(seq 1 $1); do curl -sS $hdr reviews:9080/reviews/0; echo; done" |
		grep -o '"version":"v[0-9]"' | sort | uniq -c | sed 's/^/    /'
}

pages() { # pages <n> [user]: reviews versions on n productpage loads through the ingress gateway, signed in as user
	local jar
	jar=$(mktemp)
	[[ -n ${2:-} ]] && curl -sS -m 5 -c "$jar" -o /dev/null -d "username=$2" "http://$INGRESS_HOST:$INGRESS_PORT/login"
	for i in $(seq 1 "$1"); do
		curl -sS -m 5 -b "$jar" "http://$INGRESS_HOST:$INGRESS_PORT/productpage" | grep -o 'reviews-v[0-9]' | head -1 || echo "no-reviews"
	done | sort | uniq -c | sed 's/^/    /'
	rm -f "$jar"
}

step "Reviews versions answering through the Service (no routing rules yet)"
versions 12
echo "  productpage loads (each call to reviews is a new connection, as upstream):"
pages 15

step "Deploy a waypoint for the namespace (weftctl waypoint apply --enroll-namespace --wait)"
"$BIN/weftctl" waypoint apply -n default --enroll-namespace --wait
"$BIN/weftctl" waypoint list -n default
"$kubectl" apply -f samples/bookinfo/networking/destination-rule-all.yaml

step "Istio's tutorial: virtual-service-all-v1.yaml (everyone to v1)"
"$kubectl" apply -f samples/bookinfo/networking/virtual-service-all-v1.yaml
sleep 2
versions 20

step "virtual-service-reviews-test-v2.yaml (end-user jason to v2, everyone else v1)"
"$kubectl" apply -f samples/bookinfo/networking/virtual-service-reviews-test-v2.yaml
sleep 2
echo "  as jason:"
versions 10 jason
echo "  as anyone else:"
versions 10
echo "  productpage signed in as jason, then as another user (through the ingress gateway):"
jason=$(pages 10 jason)
other=$(pages 10 alice)
echo "$jason" | sed 's/^/  jason:/'
echo "$other" | sed 's/^/  alice:/'
if [[ $(echo "$jason" | awk '{print $2}') != reviews-v2 || $(echo "$other" | awk '{print $2}') != reviews-v1 ]]; then
	echo "the tutorial's rule did not take effect on productpage: jason must see only v2, others only v1" >&2
	exit 1
fi

step "virtual-service-reviews-50-v3.yaml (50/50 between v1 and v3), 100 requests"
"$kubectl" apply -f samples/bookinfo/networking/virtual-service-reviews-50-v3.yaml
sleep 2
versions 100

step "The live mesh dashboard (weftctl dashboard, left running in the background)"
# It port-forwards to weft-control through the API server; demo-down stops it.
dash_pid=$state/dashboard.pid
if [[ -f $dash_pid ]] && kill -0 "$(cat "$dash_pid")" 2>/dev/null; then
	kill "$(cat "$dash_pid")" 2>/dev/null || true
fi
nohup "$BIN/weftctl" dashboard --port "${DASHBOARD_PORT:-15300}" >"$state/logs/dashboard.log" 2>&1 &
echo $! >"$dash_pid"
dash_url=""
for i in $(seq 1 30); do
	dash_url=$(grep -o 'http://[^ ]*/dashboard' "$state/logs/dashboard.log" 2>/dev/null || true)
	[[ -n $dash_url ]] && break
	sleep 0.5
done
# Traffic for the graph: a few pages through the ingress gateway and inside the mesh.
for i in $(seq 1 20); do curl -sS -m 5 -o /dev/null "http://$INGRESS_HOST:$INGRESS_PORT/productpage" || true; done
echo "dashboard: ${dash_url:-not started, see $state/logs/dashboard.log}"

prom_hint=""
if [[ $addons == *" prometheus "* ]]; then
	step "Istio's Prometheus addon (kubectl apply -f samples/addons/prometheus.yaml), port-forwarded in the background"
	"$kubectl" apply -f samples/addons/prometheus.yaml
	"$kubectl" -n istio-system rollout status deployment/prometheus --timeout=120s
	prom_url=http://127.0.0.1:${PROMETHEUS_PORT:-9090}
	port_forward prometheus "${PROMETHEUS_PORT:-9090}" prometheus 9090
	for i in $(seq 1 30); do
		curl -sS -m 2 -o /dev/null "$prom_url/-/ready" 2>/dev/null && break
		sleep 0.5
	done
	echo "prometheus: $prom_url (HTTP API; it scrapes the pods annotated prometheus.io/scrape: node agents, weft-control, waypoints, gateways)"
	# The local prom/prometheus has no web UI assets: its HTTP API.
	prom_hint="  curl -sG $prom_url/api/v1/query --data-urlencode 'query=sum by (destination_workload) (rate(istio_requests_total[1m]))'   # Prometheus (ADDONS=prometheus)"
fi

jaeger_hint=""
if [[ $addons == *" jaeger "* ]]; then
	step "Jaeger: one request through the ingress gateway (signed in as jason) is one trace"
	"$kubectl" -n istio-system rollout status deployment/jaeger --timeout=120s
	jaeger_url=http://127.0.0.1:${JAEGER_PORT:-16686}/jaeger
	port_forward jaeger "${JAEGER_PORT:-16686}" tracing 80
	for i in $(seq 1 30); do
		curl -sS -m 2 -o /dev/null "$jaeger_url/api/services" 2>/dev/null && break
		sleep 0.5
	done
	jar=$(mktemp)
	rid=demo-$(date +%s)
	curl -sS -m 5 -c "$jar" -o /dev/null -d "username=jason" "http://$INGRESS_HOST:$INGRESS_PORT/login"
	curl -sS -m 5 -b "$jar" -o /dev/null -H "x-request-id: $rid" "http://$INGRESS_HOST:$INGRESS_PORT/productpage"
	rm -f "$jar"
	echo "GET /productpage as jason, x-request-id $rid (the proxies export within 5 s)"
	trace_id=""
	for i in $(seq 1 30); do
		trace_id=$(curl -sSG -m 5 "$jaeger_url/api/traces" --data-urlencode service=weft-ingress.weft-ingress \
			--data-urlencode "tags={\"guid:x-request-id\":\"$rid\"}" 2>/dev/null | grep -o '"traceID":"[0-9a-f]*"' | head -1 | cut -d'"' -f4)
		[[ -n $trace_id ]] && break
		sleep 1
	done
	echo "jaeger: $jaeger_url (HTTP API; the local jaegertracing/jaeger has no UI assets)"
	echo "  trace ${trace_id:-not found}: $jaeger_url/api/traces/${trace_id:-<id>}"
	jaeger_hint="  curl -sG $jaeger_url/api/traces --data-urlencode service=waypoint.default --data-urlencode limit=5   # Jaeger (ADDONS=jaeger)"
fi

step "Mesh health: weftctl proxy-status and weftctl analyze"
"$BIN/weftctl" proxy-status || true
"$BIN/weftctl" analyze -n default || true

cat <<EOT

The cluster is running. Try:

  export KUBECONFIG=$KUBECONFIG
  export PATH=$KUBE_ASSETS:\$PATH      # kubectl and helm matching the cluster (v1.37)
  kubectl get pods -o wide
  kubectl exec deploy/curl -- curl -sS productpage:9080/productpage | grep -o '<title>.*</title>'
  curl -s http://$INGRESS_HOST:$INGRESS_PORT/productpage | grep -o '<title>.*</title>'   # through the ingress gateway
  kubectl logs deploy/productpage-v1
  kubectl -n weft-system logs ds/weft-node-agent   # one JSON access-log line per connection
  $BIN/weftctl node-config workloads --node node-0 # what a node agent knows
  $BIN/weftctl waypoint list -A
  kubectl apply -f samples/bookinfo/networking/virtual-service-ratings-test-delay.yaml   # more of the tutorial

  open ${dash_url:-http://127.0.0.1:15300/dashboard}   # live service graph (weftctl dashboard)
${prom_hint:+$prom_hint
}${jaeger_hint:+$jaeger_hint
}  $BIN/weft-cluster status --name $name
  make demo-down                     # stop it and remove everything it made
EOT
