// Package kubeapi is the node agent's only use of the Kubernetes API: it
// reads a namespace's labels, at CNI ADD, when nothing else can say
// whether the namespace is enrolled (a new node while the control plane
// is unreachable). The agent learns everything else over xDS.
//
// It is one authenticated GET with net/http rather than client-go: the
// agent's memory is budgeted (docs/benchmarks.md), and client-go's REST
// machinery and scheme registration would cost more than the whole rest
// of this path.
package kubeapi

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"
)

// Where in-cluster clients find their credentials (the kube-api-access
// volume of the node agent's chart).
const (
	DefaultTokenFile = "/var/run/secrets/kubernetes.io/serviceaccount/token"
	DefaultCAFile    = "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt"
)

// maxResponse bounds what is read of an answer: a Namespace is small.
const maxResponse = 1 << 20

// Client reads namespaces from one API server.
type Client struct {
	base      string // https://host:port
	tokenFile string // read at every request: the kubelet rotates it
	http      *http.Client
}

// InCluster is a Client for the API server the kubelet names in every
// pod's environment (KUBERNETES_SERVICE_HOST and _PORT), authenticated
// with the token and trusting the CA of the given files ("" for the
// defaults).
func InCluster(tokenFile, caFile string) (*Client, error) {
	host, port := os.Getenv("KUBERNETES_SERVICE_HOST"), os.Getenv("KUBERNETES_SERVICE_PORT")
	if host == "" || port == "" {
		return nil, errors.New("KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT are not set: not in a pod")
	}
	if tokenFile == "" {
		tokenFile = DefaultTokenFile
	}
	if caFile == "" {
		caFile = DefaultCAFile
	}
	pem, err := os.ReadFile(caFile)
	if err != nil {
		return nil, fmt.Errorf("API server CA: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("API server CA %s: no certificate", caFile)
	}
	if _, err := os.Stat(tokenFile); err != nil {
		return nil, fmt.Errorf("API token: %w", err)
	}
	return New("https://"+net.JoinHostPort(host, port), tokenFile, &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}), nil
}

// New is a Client for the API server at base (https://host:port).
func New(base, tokenFile string, tlsConfig *tls.Config) *Client {
	return &Client{base: strings.TrimSuffix(base, "/"), tokenFile: tokenFile, http: &http.Client{
		Transport: &http.Transport{TLSClientConfig: tlsConfig, TLSHandshakeTimeout: 5 * time.Second, MaxIdleConns: 1, IdleConnTimeout: time.Minute},
	}}
}

// NamespaceLabels returns namespace name's labels. Anything but a 200
// with a Namespace of that name is an error.
func (c *Client) NamespaceLabels(ctx context.Context, name string) (map[string]string, error) {
	token, err := os.ReadFile(c.tokenFile)
	if err != nil {
		return nil, fmt.Errorf("API token: %w", err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.base+"/api/v1/namespaces/"+url.PathEscape(name), nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+strings.TrimSpace(string(token)))
	req.Header.Set("Accept", "application/json")
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxResponse))
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET namespace %q: %s: %.200s", name, resp.Status, body)
	}
	var ns struct {
		Kind     string `json:"kind"`
		Metadata struct {
			Name   string            `json:"name"`
			Labels map[string]string `json:"labels"`
		} `json:"metadata"`
	}
	if err := json.Unmarshal(body, &ns); err != nil {
		return nil, fmt.Errorf("GET namespace %q: %w", name, err)
	}
	if ns.Kind != "Namespace" || ns.Metadata.Name != name {
		return nil, fmt.Errorf("GET namespace %q: got %s %q", name, ns.Kind, ns.Metadata.Name)
	}
	return ns.Metadata.Labels, nil
}
