// Command weft-waypoint is Weft's L7 proxy for a namespace or service
// account (a Gateway of class weft-waypoint): it gets its own certificate
// from weft-control's CA, subscribes to its Envoy xDS resources and serves
// HBONE on mesh.HBONEPort. Ingress and egress gateways run weft-gateway,
// from the same image. See waypoint/README.md.
package main

import (
	"fmt"
	"os"

	"github.com/weft-mesh/weft/waypoint/command"
	"github.com/weft-mesh/weft/waypoint/daemon"
)

func main() {
	cmd := command.New("weft-waypoint", "Weft waypoint: L7 proxy (HBONE in, routes, load balancing, HBONE out) configured by Envoy xDS",
		daemon.ModeWaypoint, nil)
	if err := cmd.Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "weft-waypoint:", err)
		os.Exit(1)
	}
}
