// Package kubeapi is the node agent's only use of the Kubernetes API: at
// CNI ADD the agent reads the new pod's labels (its own
// istio.io/dataplane-mode decides before its namespace's), and a
// namespace's labels when nothing else can say whether the namespace is
// enrolled (a new node while the control plane is unreachable); the
// install-cni container removes the node's readiness taint once the plugin
// is installed. The agent learns everything else over xDS.
//
// It is one authenticated GET with net/http rather than client-go: the
// agent's memory is budgeted (docs/benchmarks.md), and client-go's REST
// machinery and scheme registration would cost more than the whole rest
// of this path.
package kubeapi

import (
	"bytes"
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

// maxResponse bounds what is read of an answer: a Node, or the metadata of
// a Namespace or Pod, is small.
const maxResponse = 1 << 20

// Client talks to one API server.
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
	ns, err := c.metadata(ctx, "/api/v1/namespaces/"+url.PathEscape(name), "Namespace", name)
	if err != nil {
		return nil, err
	}
	return ns.Metadata.Labels, nil
}

// PodLabels returns the labels and UID of pod name in namespace ns.
// Anything but a 200 with a Pod of that name is an error.
func (c *Client) PodLabels(ctx context.Context, ns, name string) (labels map[string]string, uid string, err error) {
	p, err := c.metadata(ctx, "/api/v1/namespaces/"+url.PathEscape(ns)+"/pods/"+url.PathEscape(name), "Pod", name)
	if err != nil {
		return nil, "", err
	}
	return p.Metadata.Labels, p.Metadata.UID, nil
}

// metadataOnly asks the API server for an object's metadata alone
// (PartialObjectMetadata): the agent may get any pod, and so receives none
// of a pod's spec (its environment, for one).
const metadataOnly = "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1"

// metadata gets the metadata of the kind object named name at path. A
// server that ignores metadataOnly answers the whole object, accepted too.
func (c *Client) metadata(ctx context.Context, path, kind, name string) (*object, error) {
	var o object
	if err := c.do(ctx, http.MethodGet, path, metadataOnly, nil, &o); err != nil {
		return nil, err
	}
	if o.Kind == "PartialObjectMetadata" {
		o.Kind = kind
	}
	return &o, o.is(kind, name)
}

// Taint is a Node's taint as the API has it.
type Taint struct {
	Key    string `json:"key"`
	Value  string `json:"value,omitempty"`
	Effect string `json:"effect"`
}

// RemoveNodeTaint removes every taint with key from node, reporting
// whether there was one. It patches only those entries, each behind a
// JSON Patch test of its key, so a concurrent change to the node's taints
// makes the patch fail (422: read again and retry) instead of removing
// someone else's taint.
func (c *Client) RemoveNodeTaint(ctx context.Context, node, key string) (bool, error) {
	path := "/api/v1/nodes/" + url.PathEscape(node)
	var n object
	if err := c.do(ctx, http.MethodGet, path, "", nil, &n); err != nil {
		return false, err
	}
	if err := n.is("Node", node); err != nil {
		return false, err
	}
	var patch []map[string]string
	for i := len(n.Spec.Taints) - 1; i >= 0; i-- { // last first: indexes stay valid
		if n.Spec.Taints[i].Key == key {
			at := fmt.Sprintf("/spec/taints/%d", i)
			patch = append(patch, map[string]string{"op": "test", "path": at + "/key", "value": key}, map[string]string{"op": "remove", "path": at})
		}
	}
	if len(patch) == 0 {
		return false, nil
	}
	body, err := json.Marshal(patch)
	if err != nil {
		return false, err
	}
	var patched object
	if err := c.do(ctx, http.MethodPatch, path, "", body, &patched); err != nil {
		return false, err
	}
	return true, patched.is("Node", node)
}

// object is what the client reads of any object it gets.
type object struct {
	Kind     string `json:"kind"`
	Metadata struct {
		Name   string            `json:"name"`
		UID    string            `json:"uid"`
		Labels map[string]string `json:"labels"`
	} `json:"metadata"`
	Spec struct {
		Taints []Taint `json:"taints"`
	} `json:"spec"`
}

func (o *object) is(kind, name string) error {
	if o.Kind != kind || o.Metadata.Name != name {
		return fmt.Errorf("asked for %s %q, got %s %q", kind, name, o.Kind, o.Metadata.Name)
	}
	return nil
}

// do sends one request (a body is a JSON Patch) accepting accept (""
// for application/json) and decodes a 200's body into v. Anything else is
// an error that quotes the server.
func (c *Client) do(ctx context.Context, method, path, accept string, body []byte, v any) error {
	token, err := os.ReadFile(c.tokenFile)
	if err != nil {
		return fmt.Errorf("API token: %w", err)
	}
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, rd)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+strings.TrimSpace(string(token)))
	if accept == "" {
		accept = "application/json"
	}
	req.Header.Set("Accept", accept)
	if body != nil {
		req.Header.Set("Content-Type", "application/json-patch+json")
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	answer, err := io.ReadAll(io.LimitReader(resp.Body, maxResponse))
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s %s: %s: %.1000s", method, path, resp.Status, answer)
	}
	if err := json.Unmarshal(answer, v); err != nil {
		return fmt.Errorf("%s %s: %w", method, path, err)
	}
	return nil
}
