package cli

import (
	"cmp"
	"fmt"
	"runtime/debug"
	"strings"

	"github.com/spf13/cobra"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/weft-mesh/weft/weftctl/internal/output"
)

// VersionInfo is `weftctl version`'s output.
type VersionInfo struct {
	Client ClientVersion  `json:"client"`
	Server *ServerVersion `json:"server,omitempty"`
	// ServerError says why the server version is missing.
	ServerError string `json:"serverError,omitempty"`
}

// ClientVersion comes from the binary's build information.
type ClientVersion struct {
	Version   string `json:"version"`
	Revision  string `json:"revision,omitempty"`
	Modified  bool   `json:"modified,omitempty"`
	GoVersion string `json:"goVersion"`
}

// ServerVersion is weft-control's Deployment.
type ServerVersion struct {
	Namespace         string   `json:"namespace"`
	Version           string   `json:"version,omitempty"` // app.kubernetes.io/version
	Images            []string `json:"images"`
	Replicas          int32    `json:"replicas"`
	ReadyReplicas     int32    `json:"readyReplicas"`
	KubernetesVersion string   `json:"kubernetesVersion,omitempty"`
}

// clientVersion reads debug.BuildInfo: the module version ("(devel)" for a
// source build) and the VCS stamp.
func clientVersion(bi *debug.BuildInfo, ok bool) ClientVersion {
	if !ok || bi == nil {
		return ClientVersion{Version: "unknown"}
	}
	v := ClientVersion{Version: cmp.Or(bi.Main.Version, "(devel)"), GoVersion: bi.GoVersion}
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			v.Revision = s.Value
		case "vcs.modified":
			v.Modified = s.Value == "true"
		}
	}
	return v
}

// Header implements output.Tabular.
func (VersionInfo) Header() []string { return []string{"COMPONENT", "VERSION", "DETAILS"} }

// Rows implements output.Tabular.
func (v VersionInfo) Rows() [][]string {
	details := v.Client.GoVersion
	if v.Client.Revision != "" {
		rev := v.Client.Revision
		if len(rev) > 12 {
			rev = rev[:12]
		}
		details += ", revision " + rev
		if v.Client.Modified {
			details += " (modified)"
		}
	}
	rows := [][]string{{"client (weftctl)", v.Client.Version, details}}
	if s := v.Server; s != nil {
		rows = append(rows, []string{"server (weft-control)", s.Version,
			fmt.Sprintf("image %s, %d/%d ready in %s, kubernetes %s", strings.Join(s.Images, ","), s.ReadyReplicas, s.Replicas, s.Namespace, s.KubernetesVersion)})
	} else {
		rows = append(rows, []string{"server (weft-control)", "", v.ServerError})
	}
	return rows
}

func newVersion(o *options) *cobra.Command {
	var clientOnly bool
	cmd := &cobra.Command{
		Use:   "version",
		Short: "Print weftctl's version and weft-control's (image and version of its Deployment)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			f, err := o.format()
			if err != nil {
				return err
			}
			v := VersionInfo{Client: clientVersion(debug.ReadBuildInfo())}
			if !clientOnly {
				v.Server, err = o.serverVersion(cmd)
				if err != nil {
					v.ServerError = err.Error()
				}
			}
			return output.Print(o.out, f, v, v)
		},
	}
	cmd.Flags().BoolVar(&clientOnly, "client", false, "only the client version (no cluster access)")
	return cmd
}

func (o *options) serverVersion(cmd *cobra.Command) (*ServerVersion, error) {
	c, err := o.client()
	if err != nil {
		return nil, err
	}
	ctx, cancel := o.context(cmd)
	defer cancel()
	d, err := c.Kube.AppsV1().Deployments(o.WeftNamespace).Get(ctx, "weft-control", metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil, fmt.Errorf("no Deployment weft-control in namespace %s (installed elsewhere? use --weft-namespace)", o.WeftNamespace)
	}
	if err != nil {
		return nil, fmt.Errorf("get deployment %s/weft-control: %w", o.WeftNamespace, err)
	}
	s := &ServerVersion{Namespace: o.WeftNamespace, Version: d.Labels["app.kubernetes.io/version"], Images: []string{},
		ReadyReplicas: d.Status.ReadyReplicas}
	if d.Spec.Replicas != nil {
		s.Replicas = *d.Spec.Replicas
	}
	for _, ctr := range d.Spec.Template.Spec.Containers {
		s.Images = append(s.Images, ctr.Image)
	}
	if sv, err := c.Kube.Discovery().ServerVersion(); err == nil {
		s.KubernetesVersion = sv.GitVersion
	}
	return s, nil
}
