package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"

	"github.com/weft-mesh/weft/node-agent/cni"
)

// FuzzPlugin runs ADD and DEL with arbitrary stdin configuration (the
// conflist entry plus the runtime's prevResult) and CNI arguments.
// Properties: no panic; a configuration that does not parse is a CNI
// decoding error; ADD either fails with a CNI error or writes a result that
// is valid JSON; DEL never fails; and whatever the plugin spooled for the
// agent (the agent is down here) is an event the agent accepts on replay.
func FuzzPlugin(f *testing.F) {
	conf := func(version, extra string) []byte {
		return []byte(`{"cniVersion":"` + version + `","name":"weft-pod-network","type":"weft-cni","logLevel":"none"` + extra + `}`)
	}
	args := cmdArgs(nil)
	for _, stdin := range [][]byte{
		conf("1.0.0", `,"prevResult":`+prevResult),
		conf("0.4.0", `,"prevResult":`+strings.Replace(prevResult, `"1.0.0"`, `"0.4.0"`, 1)),
		conf("0.3.1", `,"prevResult":{"cniVersion":"0.3.1","ips":[{"version":"4","address":"10.0.0.2/24"}]}`),
		conf("1.0.0", `,"prevResult":{"cniVersion":"1.0.0","ips":[{"interface":5,"address":"10.0.0.2/24"}],"interfaces":[null]}`),
		conf("1.0.0", `,"prevResult":{"cniVersion":"1.0.0","ips":[{"interface":-1},null]}`),
		conf("1.0.0", `,"prevResult":{"cniVersion":"9.9.9"}`),
		conf("1.0.0", `,"prevResult":null`),
		conf("1.0.0", ``),
		conf("", `,"prevResult":{}`),
		[]byte(`{garbage`), []byte(`null`), []byte(`[]`), nil,
	} {
		f.Add(stdin, args.ContainerID, args.Netns, args.Args)
	}
	f.Add(conf("1.0.0", `,"prevResult":`+prevResult), "", "", "K8S_POD_NAMESPACE=;K8S_POD_NAME")
	f.Add(conf("1.0.0", `,"prevResult":`+prevResult), "../../x", "/proc/1/ns/net", ";;==;K8S_POD_UID=a=b")

	f.Fuzz(func(t *testing.T, stdin []byte, containerID, netns, cniArgs string) {
		dir := t.TempDir()
		spoolDir := filepath.Join(dir, "spool")
		p := &plugin{stdout: io.Discard, stderr: io.Discard}
		run := func(data []byte) *skel.CmdArgs {
			return &skel.CmdArgs{ContainerID: containerID, Netns: netns, IfName: "eth0", Args: cniArgs, StdinData: data}
		}

		c, err := parseConf(stdin)
		if err != nil {
			var e *types.Error
			if !errors.As(err, &e) || e.Code != types.ErrDecodingFailure {
				t.Fatalf("parseConf error %v is not a CNI decoding failure", err)
			}
			if err := p.cmdAdd(run(stdin)); err == nil {
				t.Fatal("ADD succeeded with a configuration that does not parse")
			}
			return // DEL would fall back to the node's real spool directory
		}
		if c.AgentSocket == "" || c.SpoolDir == "" {
			t.Fatalf("parseConf left no defaults: %+v", c)
		}
		// Point the plugin at this test's (absent) agent, spool and
		// enrolled-namespaces file.
		var m map[string]json.RawMessage
		if json.Unmarshal(stdin, &m) != nil {
			return
		}
		if m == nil {
			m = map[string]json.RawMessage{}
		}
		m["agentSocket"], _ = json.Marshal(filepath.Join(dir, "cni.sock"))
		m["spoolDir"], _ = json.Marshal(spoolDir)
		m["enrolledNamespaces"], _ = json.Marshal(filepath.Join(dir, "enrolled-namespaces.json"))
		data, _ := json.Marshal(m)

		var out bytes.Buffer
		p.stdout = &out
		if err := p.cmdAdd(run(data)); err != nil {
			var e *types.Error
			if !errors.As(err, &e) {
				t.Fatalf("ADD failed with a non-CNI error %T %v", err, err)
			}
		} else if !json.Valid(out.Bytes()) {
			t.Fatalf("ADD result is not JSON: %q", out.Bytes())
		}
		if err := p.cmdDel(run(data)); err != nil {
			t.Fatalf("DEL failed: %v", err)
		}
		if _, err := cni.DrainSpool(spoolDir, func(context.Context, cni.Event) error { return nil }); err != nil {
			t.Fatalf("the agent rejects what the plugin spooled: %v", err)
		}
	})
}

// FuzzK8sArgs: CNI_ARGS parses without panic, and the pod identity the
// runtime puts in it comes back as it was (values may hold '=', not ';').
func FuzzK8sArgs(f *testing.F) {
	f.Add("default", "productpage-1", "1234-5678", "IgnoreUnknown=1")
	f.Add("", "", "", "")
	f.Add("a=b", "==", "x", ";;=;K8S_POD_NAME=evil")
	f.Fuzz(func(t *testing.T, ns, name, uid, other string) {
		k8sArgs(other)
		for _, s := range []string{ns, name, uid} {
			if strings.Contains(s, ";") {
				return
			}
		}
		if strings.Contains(other, "K8S_POD_") {
			return
		}
		in := other + ";K8S_POD_NAMESPACE=" + ns + ";K8S_POD_NAME=" + name + ";K8S_POD_UID=" + uid
		gotNS, gotName, gotUID := k8sArgs(in)
		if gotNS != ns || gotName != name || gotUID != uid {
			t.Fatalf("k8sArgs(%q) = %q %q %q", in, gotNS, gotName, gotUID)
		}
	})
}
