// Package kubelet is a small kubelet for weft's e2e clusters: nodes are
// network namespaces and every container is a plain process running in its
// pod's network namespace and in a private mount namespace whose root is an
// overlay of the host's root. It talks to a real kube-apiserver.
package kubelet

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/client-go/rest"
)

// Version reported in the Node's nodeInfo.
const (
	KubeletVersion = "v1.37.1"
	RuntimeVersion = "weft://local"
)

// Config is everything the kubelet needs; the harness can fill it directly
// and call Run instead of exec'ing weft-kubelet.
type Config struct {
	NodeName   string
	Kubeconfig string
	// RestConfig, when set, is used instead of Kubeconfig (embedding).
	RestConfig *rest.Config

	NodeIP  string
	PodCIDR string
	// NodeLabels are added to the Node's own labels at registration (the
	// real kubelet's --node-labels), e.g. topology.kubernetes.io/zone.
	NodeLabels map[string]string

	// RootDir is the node's "host filesystem": hostPath volumes resolve
	// under it (see resolveHostPath).
	RootDir string
	// StateDir holds pod dirs, logs and pid/state files.
	// Default <RootDir>/var/lib/kubelet.
	StateDir string

	ImageMaps []string
	// BinDir expands ${BIN} in image maps. Default $WEFT_BIN_DIR.
	BinDir string

	CNIConfDir  string
	CNIBinDir   string
	CNICacheDir string

	ClusterDNS    []string
	ClusterDomain string

	TLSCertFile  string
	TLSKeyFile   string
	ClientCAFile string
	Port         int

	// NetnsDir is where pod netns are bind-mounted (default /run/netns) and
	// NetnsPrefix prefixes their names so nodes never collide.
	NetnsDir    string
	NetnsPrefix string

	// CgroupParent is relative to the pids hierarchy root.
	CgroupParent string

	// SelfBinary is the executable started in the hidden container-init
	// and cni-exec modes. Default: os.Executable(). An embedding program
	// must call MaybeRunHidden at the top of its main.
	SelfBinary string

	// NodeStatusInterval / LeaseInterval default to 1m / 10s.
	NodeStatusInterval time.Duration
	LeaseInterval      time.Duration

	Logger *slog.Logger
}

func (c *Config) setDefaults() error {
	if c.Logger == nil {
		c.Logger = slog.New(slog.NewTextHandler(os.Stderr, nil))
	}
	if c.StateDir == "" && c.RootDir != "" {
		c.StateDir = filepath.Join(c.RootDir, "var/lib/kubelet")
	}
	if c.BinDir == "" {
		c.BinDir = os.Getenv("WEFT_BIN_DIR")
	}
	if c.NetnsDir == "" {
		c.NetnsDir = "/run/netns"
	}
	if c.NetnsPrefix == "" {
		c.NetnsPrefix = "weft-" + c.NodeName + "-"
	}
	if c.ClusterDomain == "" {
		c.ClusterDomain = "cluster.local"
	}
	if c.Port == 0 {
		c.Port = 10250
	}
	if c.NodeStatusInterval == 0 {
		c.NodeStatusInterval = time.Minute
	}
	if c.LeaseInterval == 0 {
		c.LeaseInterval = 10 * time.Second
	}
	if c.SelfBinary == "" {
		exe, err := os.Executable()
		if err != nil {
			return fmt.Errorf("finding own executable: %w", err)
		}
		c.SelfBinary = exe
	}
	if c.CNICacheDir == "" && c.RootDir != "" {
		c.CNICacheDir = filepath.Join(c.RootDir, "var/lib/cni/cache")
	}
	return nil
}

func (c *Config) validate() error {
	var errs []error
	if c.NodeName == "" {
		errs = append(errs, errors.New("--node-name is required"))
	}
	if c.Kubeconfig == "" && c.RestConfig == nil {
		errs = append(errs, errors.New("--kubeconfig is required"))
	}
	if net.ParseIP(c.NodeIP) == nil {
		errs = append(errs, fmt.Errorf("--node-ip %q is not an IP", c.NodeIP))
	}
	if c.PodCIDR != "" {
		if _, _, err := net.ParseCIDR(c.PodCIDR); err != nil {
			errs = append(errs, fmt.Errorf("--pod-cidr: %w", err))
		}
	}
	if c.RootDir == "" || !filepath.IsAbs(c.RootDir) {
		errs = append(errs, fmt.Errorf("--root-dir must be an absolute path, got %q", c.RootDir))
	}
	if c.StateDir != "" && !filepath.IsAbs(c.StateDir) {
		errs = append(errs, fmt.Errorf("--state-dir must be absolute, got %q", c.StateDir))
	}
	if c.CNIConfDir == "" || c.CNIBinDir == "" {
		errs = append(errs, errors.New("--cni-conf-dir and --cni-bin-dir are required"))
	}
	for _, ip := range c.ClusterDNS {
		if net.ParseIP(ip) == nil {
			errs = append(errs, fmt.Errorf("--cluster-dns %q is not an IP", ip))
		}
	}
	if (c.TLSCertFile == "") != (c.TLSKeyFile == "") {
		errs = append(errs, errors.New("--tls-cert-file and --tls-private-key-file go together"))
	}
	for k, v := range c.NodeLabels {
		for _, msg := range append(validation.IsQualifiedName(k), validation.IsValidLabelValue(v)...) {
			errs = append(errs, fmt.Errorf("--node-labels %s=%s: %s", k, v, msg))
		}
	}
	if strings.Contains(c.NetnsPrefix, "/") {
		errs = append(errs, fmt.Errorf("--netns-prefix %q must not contain '/'", c.NetnsPrefix))
	}
	return errors.Join(errs...)
}
