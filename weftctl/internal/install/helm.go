package install

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"path"
	"time"

	"helm.sh/helm/v4/pkg/action"
	"helm.sh/helm/v4/pkg/chart/loader/archive"
	chart "helm.sh/helm/v4/pkg/chart/v2"
	"helm.sh/helm/v4/pkg/chart/v2/loader"
	"helm.sh/helm/v4/pkg/kube"
	releasev1 "helm.sh/helm/v4/pkg/release/v1"
	"helm.sh/helm/v4/pkg/storage/driver"
	"k8s.io/cli-runtime/pkg/genericclioptions"
)

// LoadChart loads the chart in directory dir of fsys (weftctl's embedded
// charts, or a directory given with --charts).
func LoadChart(fsys fs.FS, dir string) (*chart.Chart, error) {
	var files []*archive.BufferedFile
	err := fs.WalkDir(fsys, dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		data, err := fs.ReadFile(fsys, p)
		if err != nil {
			return err
		}
		rel := p[len(dir)+1:]
		files = append(files, &archive.BufferedFile{Name: path.Clean(rel), Data: data})
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read chart %s: %w", dir, err)
	}
	c, err := loader.LoadFiles(files)
	if err != nil {
		return nil, fmt.Errorf("load chart %s: %w", dir, err)
	}
	return c, nil
}

// Status is one release after install, upgrade or uninstall.
type Status struct {
	Release      string `json:"release"`
	Namespace    string `json:"namespace"`
	Chart        string `json:"chart"`
	ChartVersion string `json:"chartVersion"`
	AppVersion   string `json:"appVersion,omitempty"`
	Revision     int    `json:"revision,omitempty"`
	Status       string `json:"status"`
}

// Helm runs Helm actions with the kubeconfig weftctl uses.
type Helm struct {
	Kubeconfig, Context string // as kubectl: empty means KUBECONFIG, ~/.kube/config, current context
	Log                 slog.Handler
}

// config is helm's action configuration for releases in ns (helm -n ns).
func (h Helm) config(ns string) (*action.Configuration, error) {
	f := genericclioptions.NewConfigFlags(false)
	f.KubeConfig, f.Context, f.Namespace = &h.Kubeconfig, &h.Context, &ns
	cfg := action.NewConfiguration(action.ConfigurationSetLogger(h.Log))
	if err := cfg.Init(f, ns, "secret"); err != nil {
		return nil, fmt.Errorf("helm: %w", err)
	}
	return cfg, nil
}

// Apply installs r, or upgrades it when it exists. Values not given revert
// to the chart's defaults (no --reuse-values), so the same command line
// always yields the same release. Helm itself does not wait: the caller
// waits for the workloads, with progress.
func (h Helm) Apply(ctx context.Context, r Release, c *chart.Chart, vals map[string]any, timeout time.Duration) (Status, error) {
	cfg, err := h.config(r.Namespace)
	if err != nil {
		return Status{}, err
	}
	if vals == nil {
		vals = map[string]any{}
	}
	_, err = action.NewHistory(cfg).Run(r.Name)
	var rel any
	switch {
	case errors.Is(err, driver.ErrReleaseNotFound):
		in := action.NewInstall(cfg)
		in.ReleaseName, in.Namespace, in.CreateNamespace = r.Name, r.Namespace, true
		in.WaitStrategy, in.Timeout = kube.HookOnlyStrategy, timeout
		rel, err = in.RunWithContext(ctx, c, vals)
	case err != nil:
		return Status{}, fmt.Errorf("release %s/%s: %w", r.Namespace, r.Name, err)
	default:
		up := action.NewUpgrade(cfg)
		up.Namespace = r.Namespace
		up.WaitStrategy, up.Timeout = kube.HookOnlyStrategy, timeout
		rel, err = up.RunWithContext(ctx, r.Name, c, vals)
	}
	if err != nil {
		return Status{}, fmt.Errorf("%s (chart %s): %w", r.Name, r.Chart, err)
	}
	return statusOf(rel)
}

// Uninstall removes release r; a release that is not there is not an error.
func (h Helm) Uninstall(r Release, timeout time.Duration) (Status, error) {
	cfg, err := h.config(r.Namespace)
	if err != nil {
		return Status{}, err
	}
	s := Status{Release: r.Name, Namespace: r.Namespace, Status: "not installed"}
	if hist, err := action.NewHistory(cfg).Run(r.Name); err == nil && len(hist) > 0 {
		if st, err := statusOf(hist[len(hist)-1]); err == nil {
			s = st
		}
	}
	un := action.NewUninstall(cfg)
	un.IgnoreNotFound = true
	un.WaitStrategy, un.Timeout = kube.HookOnlyStrategy, timeout
	res, err := un.Run(r.Name)
	if err != nil {
		return s, fmt.Errorf("uninstall %s/%s: %w", r.Namespace, r.Name, err)
	}
	if res != nil && res.Release != nil {
		s.Status = "uninstalled"
	}
	return s, nil
}

// Deployed returns release r's deployed values merged over its chart's
// defaults, or nil when r is not installed.
func (h Helm) Deployed(r Release) (*releasev1.Release, error) {
	cfg, err := h.config(r.Namespace)
	if err != nil {
		return nil, err
	}
	rel, err := cfg.Releases.Deployed(r.Name)
	if errors.Is(err, driver.ErrNoDeployedReleases) || errors.Is(err, driver.ErrReleaseNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	v1, ok := rel.(*releasev1.Release)
	if !ok {
		return nil, fmt.Errorf("release %s: unsupported release type %T", r.Name, rel)
	}
	return v1, nil
}

func statusOf(rel any) (Status, error) {
	r, ok := rel.(*releasev1.Release)
	if !ok {
		return Status{}, fmt.Errorf("unsupported helm release type %T", rel)
	}
	s := Status{Release: r.Name, Namespace: r.Namespace, Revision: r.Version}
	if r.Info != nil {
		s.Status = r.Info.Status.String()
	}
	if r.Chart != nil && r.Chart.Metadata != nil {
		s.Chart, s.ChartVersion, s.AppVersion = r.Chart.Metadata.Name, r.Chart.Metadata.Version, r.Chart.Metadata.AppVersion
	}
	return s, nil
}
