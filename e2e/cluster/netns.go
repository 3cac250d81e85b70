package cluster

import (
	"fmt"
	"os"
	"os/exec"
	"strings"

	"github.com/weft-mesh/weft/pkg/netns"
)

// netnsPath is where `ip netns add` bind-mounts a named namespace.
func netnsPath(name string) string { return "/run/netns/" + name }

// ip runs an iproute2 command and returns a descriptive error with its output.
func ip(args ...string) error {
	out, err := exec.Command("ip", args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ip %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// listNetns returns the named network namespaces whose name starts with prefix.
func listNetns(prefix string) ([]string, error) {
	entries, err := os.ReadDir("/run/netns")
	if os.IsNotExist(err) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var names []string
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), prefix) {
			names = append(names, e.Name())
		}
	}
	return names, nil
}

// sysctl writes a sysctl inside the namespace at nsPath (procfs shows the
// values of the reader's thread namespace for net.*).
func sysctl(nsPath, key, value string) error {
	return netns.Do(nsPath, func() error {
		p := "/proc/sys/" + strings.ReplaceAll(key, ".", "/")
		if err := os.WriteFile(p, []byte(value), 0o644); err != nil {
			return fmt.Errorf("sysctl %s=%s: %w", key, value, err)
		}
		return nil
	})
}
