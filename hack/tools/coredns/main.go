// Command coredns is CoreDNS with the plugins the local cluster's DNS uses,
// and those the Gateway API conformance suite's own CoreDNS configuration
// names (forward, whoami: base/manifests.yaml), which otherwise does not
// start and keeps the suite's namespace from being ready. The cluster's
// DNS has no upstream forwarder on purpose: the local cluster has no route
// off the machine, so names outside the cluster domain are refused.
package main

import (
	"github.com/coredns/coredns/core/dnsserver"
	"github.com/coredns/coredns/coremain"

	_ "github.com/coredns/coredns/plugin/cache"
	_ "github.com/coredns/coredns/plugin/errors"
	_ "github.com/coredns/coredns/plugin/forward"
	_ "github.com/coredns/coredns/plugin/health"
	_ "github.com/coredns/coredns/plugin/kubernetes"
	_ "github.com/coredns/coredns/plugin/loadbalance"
	_ "github.com/coredns/coredns/plugin/log"
	_ "github.com/coredns/coredns/plugin/ready"
	_ "github.com/coredns/coredns/plugin/reload"
	_ "github.com/coredns/coredns/plugin/whoami"
)

// directives is the plugin chain order (upstream's order, restricted to the
// plugins linked above).
var directives = []string{"reload", "ready", "health", "errors", "log", "loadbalance", "cache", "kubernetes", "forward", "whoami"}

func init() { dnsserver.Directives = directives }

func main() { coremain.Run() }
