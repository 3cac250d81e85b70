// Package kube connects weftctl to a cluster: the kubeconfig (as kubectl
// finds it), the clientsets and HTTP GETs to a pod's port through the API
// server's pods/portforward subresource.
package kube

import (
	"fmt"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	gatewayclient "sigs.k8s.io/gateway-api/pkg/client/clientset/versioned"
)

// Flags are the connection flags every command shares.
type Flags struct {
	Kubeconfig string // --kubeconfig; else KUBECONFIG, else ~/.kube/config
	Context    string // --context
	Namespace  string // -n; else the context's namespace, else default
}

// Client is a connected cluster.
type Client struct {
	Config    *rest.Config
	Kube      kubernetes.Interface
	Gateway   gatewayclient.Interface
	Namespace string // -n or the kubeconfig context's namespace
	// NamespaceExplicit is true when -n was given.
	NamespaceExplicit bool
}

// Connect loads the kubeconfig like kubectl (explicit path, KUBECONFIG,
// default location; --context overrides the current context).
func Connect(f Flags) (*Client, error) {
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	rules.ExplicitPath = f.Kubeconfig
	overrides := &clientcmd.ConfigOverrides{CurrentContext: f.Context}
	cc := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, overrides)
	cfg, err := cc.ClientConfig()
	if err != nil {
		return nil, fmt.Errorf("load kubeconfig (--kubeconfig, KUBECONFIG or ~/.kube/config): %w", err)
	}
	cfg.UserAgent = "weftctl"
	ns := f.Namespace
	if ns == "" {
		if ns, _, err = cc.Namespace(); err != nil || ns == "" {
			ns = "default"
		}
	}
	kube, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	gw, err := gatewayclient.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	return &Client{Config: cfg, Kube: kube, Gateway: gw, Namespace: ns, NamespaceExplicit: f.Namespace != ""}, nil
}
