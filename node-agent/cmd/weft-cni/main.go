// Command weft-cni is Weft's chained CNI plugin. It runs after the node's
// main plugin (ptp or bridge), tells the node agent which pod sandbox was
// wired (pod, netns, IPs, host-side interface) and passes the previous
// result through unchanged. When the agent is unreachable the event is
// spooled to disk for the agent to replay, so pods outside the mesh never
// wait for the agent; but the ADD of a pod of an enrolled namespace (the
// agent's enrolled-namespaces file) fails instead, as does one the agent
// could not capture: such a pod must not start outside the mesh, and the
// kubelet retries it. See package node-agent/cni.
package main

import (
	"encoding/json"
	"io"
	"os"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/cni/pkg/version"
)

func main() {
	p := &plugin{stdout: os.Stdout, stderr: os.Stderr}
	e := skel.PluginMainFuncsWithError(skel.CNIFuncs{
		Add:    p.cmdAdd,
		Del:    p.cmdDel,
		Check:  p.cmdCheck,
		Status: p.cmdStatus,
	}, version.PluginSupports("0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"), "weft-cni: Weft mesh enrolment (chained CNI plugin)")
	if e != nil {
		printError(os.Stdout, p.cniVersion, e)
		os.Exit(1)
	}
}

// printError writes a CNI error as the spec has it: with the cniVersion of
// the request (skel's own printer leaves it out).
func printError(w io.Writer, cniVersion string, e *types.Error) {
	if cniVersion == "" {
		cniVersion = version.Current()
	}
	out, _ := json.MarshalIndent(struct {
		CNIVersion string `json:"cniVersion"`
		*types.Error
	}{cniVersion, e}, "", "    ")
	w.Write(append(out, '\n'))
}
