package agent

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"testing"

	"google.golang.org/protobuf/proto"

	cav1 "github.com/weft-mesh/weft/api/ca/v1"
	workloadv1 "github.com/weft-mesh/weft/api/workload/v1"
	"github.com/weft-mesh/weft/bpf"
	"github.com/weft-mesh/weft/node-agent/config"
	"github.com/weft-mesh/weft/pkg/identity"
	"github.com/weft-mesh/weft/pkg/xdsclient"
)

// TestConfigDumpIsOneDocument: /config_dump, written with the
// configuration streamed, is one JSON document with every part of
// ConfigDump.
func TestConfigDumpIsOneDocument(t *testing.T) {
	store := config.NewStore(config.Options{})
	w := &workloadv1.Workload{Uid: "Kubernetes//Pod/shop/cart", Name: "cart", Namespace: "shop", Addresses: []string{"10.1.0.7"},
		Node: "node-a", ServiceAccount: "cart", TrustDomain: "cluster.local", TunnelProtocol: workloadv1.TunnelProtocol_HBONE}
	if err := store.Handle(config.AddressType, map[string]proto.Message{w.Uid: &workloadv1.Address{Type: &workloadv1.Address_Workload{Workload: w}}}, nil); err != nil {
		t.Fatal(err)
	}
	ids, err := identity.NewManager(identity.Options{Client: cav1.NewCertificateServiceClient(nil),
		Tokens: identity.TokenSourceFunc(func(context.Context) (string, error) { return "t", nil })})
	if err != nil {
		t.Fatal(err)
	}
	a := &admin{store: store, ids: ids, xds: xdsclient.New(xdsclient.Config{Types: config.Types()}, store.Handle),
		enroller: &Enroller{}, ports: bpf.ProxyListeners{Outbound: 15001}}
	var b bytes.Buffer
	if err := a.writeConfigDump(&b); err != nil {
		t.Fatal(err)
	}
	var parts map[string]json.RawMessage
	dec := json.NewDecoder(&b)
	if err := dec.Decode(&parts); err != nil {
		t.Fatalf("%v:\n%s", err, b.Bytes())
	}
	if dec.More() {
		t.Errorf("more than one document: %s", b.Bytes())
	}
	if got := slices.Sorted(maps.Keys(parts)); fmt.Sprint(got) != "[certificates config enrolled listeners xds]" {
		t.Errorf("parts %v", got)
	}
	var cfg struct{ Workloads map[string]json.RawMessage }
	var ports bpf.ProxyListeners
	if err := json.Unmarshal(parts["config"], &cfg); err != nil || len(cfg.Workloads) != 1 {
		t.Errorf("config %s: %v", parts["config"], err)
	}
	if err := json.Unmarshal(parts["listeners"], &ports); err != nil || ports.Outbound != 15001 {
		t.Errorf("listeners %s: %v", parts["listeners"], err)
	}
}
