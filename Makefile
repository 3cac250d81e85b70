# Weft build, test and demo entry points. `make demo` and `make test` are the
# README's quick start; CI runs `make test` through .ci/run.
SHELL := /bin/bash
GO ?= go
ROOT := $(abspath .)
OUT := $(ROOT)/_output
BIN := $(OUT)/bin
KUBE_ASSETS := $(OUT)/kube-assets/bin
# Every Weft binary: one main package each.
CMDS := ./control/cmd/weft-control ./node-agent/cmd/weft-cni ./node-agent/cmd/weft-node-agent ./e2e/cmd/weft-cluster ./e2e/cmd/weft-kubelet ./e2e/cmd/weft-probe ./samples/bookinfo/cmd/bookinfo ./waypoint/cmd/weft-waypoint ./waypoint/cmd/weft-gateway ./weftctl/cmd/weftctl
# The local cluster the demo uses.
DEMO_CLUSTER ?= weft
# Addons make demo installs too, comma-separated: prometheus
# (samples/addons/prometheus.yaml). Empty: none.
ADDONS ?=
TEST_TIMEOUT ?= 45m
# make datapath-matrix: the whole matrix (1) or the fast subset (0).
MATRIX_FULL ?= 1
# How long make fuzz runs each fuzz target (go test -fuzztime).
FUZZTIME ?= 1m
# How many times make bench and make bench-compare run each benchmark.
BENCH_COUNT ?= 5
# The results make bench-docs keeps and writes docs/benchmarks.md from.
BENCH_RESULTS ?= $(OUT)/bench/results.json
# How many times make flake runs the unit tests.
FLAKE_COUNT ?= 20
# Build tags of every Weft binary, test and benchmark: every go command make
# runs gets them (GOFLAGS), as do the builds hack/images and hack/bench start.
# grpcnotrace builds gRPC without golang.org/x/net/trace, whose html/template
# made the linker keep every exported method of every type that reaches an
# interface (it cannot tell which a template calls): without it
# weft-waypoint is 49 MB instead of 32, weft-control 120 instead of 69, and
# the waypoint's RSS at 1000 req/s 36-39 MiB instead of 30-32
# (docs/benchmarks.md). The third-party tools of kube-assets build as their
# projects do, with the environment's GOFLAGS only.
GO_TAGS ?= grpcnotrace
ENV_GOFLAGS := $(GOFLAGS)
export GOFLAGS := -tags=$(GO_TAGS) $(ENV_GOFLAGS)
# Every test run: shuffled order, race detector (unit and e2e test binaries;
# the cluster's own binaries are built without it).
TEST_FLAGS ?= -race -shuffle=on -count=1
# hack/images is single-threaded code that gzips and hashes the binaries:
# under the race detector that takes 370 s instead of 45 s and finds nothing.
IMAGES_TEST_FLAGS ?= -shuffle=on -count=1
# Platforms of `make images` (the first one's docker archive has no suffix).
IMAGE_PLATFORMS ?= linux/amd64,linux/arm64

.PHONY: all prereqs build test unit flake fuzz e2e datapath-matrix conformance demo demo-down bench bench-compare bench-docs generate lint kube-assets images clean help

all: build

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

build: ## Build every binary into _output/bin
	@mkdir -p $(BIN)
	CGO_ENABLED=0 $(GO) build -trimpath -o $(BIN)/ $(CMDS)

images: ## OCI images of control, node-agent, waypoint into _output/images (no container engine; docs/images.md)
	cd hack/images && $(GO) run . -root $(ROOT) -out $(OUT)/images -platforms $(IMAGE_PLATFORMS)

prereqs: ## Check the host commands and Go version; as root, install missing Debian packages (hack/prereqs.txt)
	./hack/prereqs.sh

kube-assets: ## Build the local cluster's Kubernetes, etcd, CNI, CoreDNS and helm binaries
	GOFLAGS="$(ENV_GOFLAGS)" ./hack/kube-assets.sh

test: prereqs build kube-assets ## Unit and end-to-end tests (what CI runs; needs root)
	WEFT_E2E_REQUIRE=1 WEFT_BIN_DIR=$(BIN) WEFT_KUBE_ASSETS=$(KUBE_ASSETS) \
		$(GO) test $(TEST_FLAGS) -timeout $(TEST_TIMEOUT) ./...
	cd hack/images && $(GO) test $(IMAGES_TEST_FLAGS) -timeout 20m ./...

unit: ## Unit tests only (no root, no cluster)
	$(GO) test -short $(TEST_FLAGS) ./...

flake: ## Unit tests FLAKE_COUNT times (default 20), shuffled, with -race; lists every test that failed once
	./hack/flake.sh $(FLAKE_COUNT)

fuzz: ## Run every Go fuzz target for FUZZTIME (default 1m) each, one after the other (FUZZ=regexp selects; not part of make test)
	FUZZTIME=$(FUZZTIME) ./hack/fuzz.sh

e2e: prereqs build kube-assets ## End-to-end suites only, with the whole data-path matrix (1 GiB, 9,000 connections, 10 min idle)
	WEFT_E2E_REQUIRE=1 WEFT_BIN_DIR=$(BIN) WEFT_KUBE_ASSETS=$(KUBE_ASSETS) WEFT_MATRIX_FULL=1 \
		$(GO) test $(TEST_FLAGS) -timeout $(TEST_TIMEOUT) -v ./e2e/...

datapath-matrix: prereqs build kube-assets ## Run the data-path conformance matrix (TestDataPath; MATRIX_FULL=0 for the fast subset) and write docs/datapath-matrix.md from it
	WEFT_E2E_REQUIRE=1 WEFT_BIN_DIR=$(BIN) WEFT_KUBE_ASSETS=$(KUBE_ASSETS) WEFT_MATRIX_OUT=$(ROOT)/docs/datapath-matrix.md \
		WEFT_MATRIX_FULL=$(MATRIX_FULL) $(GO) test -count=1 -timeout 60m -run '^TestDataPath$$' -v ./e2e

conformance: prereqs build kube-assets ## Run the upstream Gateway API conformance suite (GATEWAY-HTTP and MESH-HTTP) on a local cluster; writes docs/conformance/report.yaml and results.md
	WEFT_E2E_REQUIRE=1 WEFT_BIN_DIR=$(BIN) WEFT_KUBE_ASSETS=$(KUBE_ASSETS) \
		WEFT_CONFORMANCE_REPORT=$(ROOT)/docs/conformance/report.yaml WEFT_CONFORMANCE_SUMMARY=$(ROOT)/docs/conformance/results.md \
		$(GO) test -tags conformance,$(GO_TAGS) -count=1 -timeout 90m -run '^TestGatewayAPIConformance$$' -v ./e2e

demo: prereqs build kube-assets ## Local cluster + Bookinfo, left running for you
	DEMO_CLUSTER=$(DEMO_CLUSTER) BIN=$(BIN) KUBE_ASSETS=$(KUBE_ASSETS) ADDONS=$(ADDONS) ./hack/demo.sh

demo-down: ## Stop the demo cluster and remove everything it made
	@pid=$(OUT)/clusters/$(DEMO_CLUSTER)/dashboard.pid; \
	if [ -f $$pid ] && grep -q weftctl /proc/$$(cat $$pid)/cmdline 2>/dev/null; then kill $$(cat $$pid); fi; rm -f $$pid
	@for pid in $(OUT)/clusters/$(DEMO_CLUSTER)/prometheus.pid $(OUT)/clusters/$(DEMO_CLUSTER)/jaeger.pid; do \
	if [ -f $$pid ] && grep -q port-forward /proc/$$(cat $$pid)/cmdline 2>/dev/null; then kill $$(cat $$pid); fi; rm -f $$pid; done
	@if [ -x $(BIN)/weft-cluster ]; then $(BIN)/weft-cluster down --name $(DEMO_CLUSTER); \
	else echo "nothing to do: $(BIN)/weft-cluster is not built"; fi

bench: prereqs build ## Every benchmark BENCH_COUNT times (default 5): min/median/max of each figure to _output/bench/results.json, then the performance targets
	WEFT_BIN_DIR=$(BIN) $(GO) run ./hack/bench run -count $(BENCH_COUNT) -out $(OUT)/bench/results.json ./...

bench-compare: prereqs build ## Weft against its peers (nginx, HAProxy, stunnel) in the same runs, BENCH_COUNT times: each performance target, its measured ratio and whether it is met
	WEFT_BIN_DIR=$(BIN) $(GO) run ./hack/bench run -count $(BENCH_COUNT) -out $(OUT)/bench/compare.json \
		-bench '^(BenchmarkWaypoint|BenchmarkNodeDataPath|BenchmarkNodeAgentScale|BenchmarkShippedNodeAgent|BenchmarkCheckLatency|BenchmarkPushTo1000Subscribers|BenchmarkPushScale|BenchmarkTranslateOnePodChange|BenchmarkTranslateWaypointsOnePodChange)$$' ./waypoint/bench ./node-agent/nodebench ./node-agent/nodebench/shipped ./node-agent/policy ./control/xds ./control/workload

bench-docs: ## Keep BENCH_RESULTS (default: make bench's) as docs/benchmarks/results.json and regenerate docs/benchmarks.md's tables and charts from it
	$(GO) run ./hack/bench docs -in $(BENCH_RESULTS) -store docs/benchmarks/results.json -doc docs/benchmarks.md

generate: ## Regenerate committed generated code (protobufs need protoc)
	./hack/gen-proto.sh
	./hack/gen-crds.sh
	$(GO) generate ./...

lint: ## gofmt + go vet + staticcheck
	@unformatted=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$unformatted" ]; then echo "gofmt would change: $$unformatted"; exit 1; fi
	$(GO) vet ./...
	cd hack/images && $(GO) vet ./...
	@mkdir -p $(OUT)/tools
	cd hack/tools/lint && CGO_ENABLED=0 $(GO) build -o $(OUT)/tools/ honnef.co/go/tools/cmd/staticcheck
	$(OUT)/tools/staticcheck ./...
	cd hack/images && $(OUT)/tools/staticcheck ./...

clean: demo-down ## Remove build output (stops the demo cluster first)
	rm -rf $(OUT)
