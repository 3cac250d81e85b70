package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"slices"
	"strconv"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/weft-mesh/weft/pkg/mesh"
	"github.com/weft-mesh/weft/weftctl/internal/kube"
)

// DefaultDashboardPort is the local port `weftctl dashboard` listens on.
const DefaultDashboardPort = 15300

func newDashboard(o *options) *cobra.Command {
	var port int
	var browser bool
	cmd := &cobra.Command{
		Use:   "dashboard",
		Short: "Open the live mesh dashboard: the service graph with request rates, error rates and mTLS per edge",
		Long: `Forwards 127.0.0.1:--port to a ready weft-control replica's monitoring port
(` + strconv.Itoa(mesh.MonitoringPort) + `) through the API server's pods/portforward subresource and prints the
dashboard's URL; --browser also opens it (xdg-open). Runs until interrupted;
when the replica goes away it forwards to another one on the same port.

The page shows the graph weft-control builds from the node agents' and
waypoints' own metrics (istio_tcp_*, istio_requests_total), scraped only
while the page is open. See docs/dashboard.md.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if port < 0 || port > 65535 {
				return fmt.Errorf("--port %d: want 1-65535, or 0 for any free port", port)
			}
			c, err := o.client()
			if err != nil {
				return err
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			s := &dashboardSession{
				ns: o.WeftNamespace, port: port, out: o.out, errOut: o.errOut, retry: 2 * time.Second, check: 5 * time.Second,
				pods: func(ctx context.Context) ([]corev1.Pod, error) {
					ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
					defer cancel()
					l, err := c.Kube.CoreV1().Pods(o.WeftNamespace).List(ctx, metav1.ListOptions{LabelSelector: ControlSelector})
					if err != nil {
						return nil, err
					}
					return l.Items, nil
				},
				forward: func(ctx context.Context, pod string, local int, stop <-chan struct{}) (*kube.Forward, error) {
					ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
					defer cancel()
					return c.PortForward(ctx, o.WeftNamespace, pod, local, mesh.MonitoringPort, stop)
				},
			}
			if browser {
				s.open = openBrowser
			}
			return s.run(ctx)
		},
	}
	cmd.Flags().IntVar(&port, "port", DefaultDashboardPort, "local port on 127.0.0.1 (0: any free port)")
	cmd.Flags().BoolVar(&browser, "browser", false, "open the dashboard in the desktop's browser (xdg-open)")
	return cmd
}

// dashboardSession keeps a port-forward to some ready weft-control replica.
type dashboardSession struct {
	ns          string
	port        int // 0 until the first forward picked one
	out, errOut io.Writer
	retry       time.Duration // between attempts to reconnect
	check       time.Duration // how often the replica is checked
	pods        func(context.Context) ([]corev1.Pod, error)
	forward     func(ctx context.Context, pod string, local int, stop <-chan struct{}) (*kube.Forward, error)
	open        func(url string) error // nil: print only
}

// run forwards until ctx ends. Failing to connect the first time is an
// error; later, a lost replica is replaced, retrying until one is ready.
func (s *dashboardSession) run(ctx context.Context) error {
	connected, last := false, ""
	for {
		pod, err := s.connect(ctx, last, connected)
		if ctx.Err() != nil {
			return nil
		}
		if err != nil && !connected {
			return err
		}
		if err != nil {
			fmt.Fprintf(s.errOut, "warning: %v; retrying in %s\n", err, s.retry)
		} else {
			connected, last = true, pod
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(s.retry):
		}
	}
}

// connect forwards to a ready replica (another than avoid when there is
// one) and returns when the forward ends.
func (s *dashboardSession) connect(ctx context.Context, avoid string, reconnect bool) (string, error) {
	pods, err := s.pods(ctx)
	if err != nil {
		return "", fmt.Errorf("list weft-control pods in %s: %w", s.ns, err)
	}
	pod := pickControlPod(pods, avoid)
	if pod == "" {
		return "", fmt.Errorf("no ready weft-control pod (%s) in namespace %s (--weft-namespace)", ControlSelector, s.ns)
	}
	stop := make(chan struct{})
	defer close(stop)
	fw, err := s.forward(ctx, pod, s.port, stop)
	if err != nil {
		return "", err
	}
	s.port = fw.Port // reconnect on the same port: the open page keeps working
	url := fmt.Sprintf("http://127.0.0.1:%d/dashboard", fw.Port)
	if reconnect {
		fmt.Fprintf(s.errOut, "forwarding to %s/%s again\n", s.ns, pod)
	} else {
		fmt.Fprintf(s.out, "Weft dashboard: %s\n", url)
		fmt.Fprintf(s.errOut, "forwarding 127.0.0.1:%d to %s/%s port %d; interrupt (Ctrl-C) to stop\n", fw.Port, s.ns, pod, mesh.MonitoringPort)
		if s.open != nil {
			if err := s.open(url); err != nil {
				fmt.Fprintf(s.errOut, "warning: cannot open a browser: %v\n", err)
			}
		}
	}
	// The forward may outlive its pod until a connection fails through it:
	// watch the replica too, and move before the page notices.
	check := time.NewTicker(s.check)
	defer check.Stop()
	for {
		select {
		case <-ctx.Done():
			return pod, nil
		case err := <-fw.Done:
			if err == nil {
				err = errors.New("port-forward ended")
			}
			fmt.Fprintf(s.errOut, "warning: lost %s/%s: %v\n", s.ns, pod, err)
			return pod, nil
		case <-check.C:
			if pods, err := s.pods(ctx); err == nil && !slices.Contains(readyControlPods(pods), pod) {
				fmt.Fprintf(s.errOut, "warning: %s/%s is gone or not ready\n", s.ns, pod)
				return pod, nil
			}
		}
	}
}

// pickControlPod returns the first ready, running replica by name,
// preferring any other than avoid (the one that just went away).
func pickControlPod(pods []corev1.Pod, avoid string) string {
	ready := readyControlPods(pods)
	for _, name := range ready {
		if name != avoid {
			return name
		}
	}
	if len(ready) > 0 {
		return ready[0]
	}
	return ""
}

// readyControlPods are the names of the running, ready replicas that are
// not being deleted, sorted.
func readyControlPods(pods []corev1.Pod) []string {
	var ready []string
	for _, p := range pods {
		if p.Status.Phase == corev1.PodRunning && p.DeletionTimestamp == nil && podReady(&p) {
			ready = append(ready, p.Name)
		}
	}
	slices.Sort(ready)
	return ready
}

// openBrowser opens url with xdg-open, without waiting for the browser.
func openBrowser(url string) error {
	bin, err := exec.LookPath("xdg-open")
	if err != nil {
		return fmt.Errorf("xdg-open not found; open %s yourself", url)
	}
	cmd := exec.Command(bin, url)
	if err := cmd.Start(); err != nil {
		return err
	}
	go cmd.Wait() // reap it
	return nil
}
