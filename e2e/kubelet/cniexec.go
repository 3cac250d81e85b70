package kubelet

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/containernetworking/cni/pkg/invoke"
	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/cni/pkg/version"
	"golang.org/x/sys/unix"
)

// modeCNIExec runs a CNI plugin with the node's runtime directories:
// `cni-exec <rootDir> <plugin> [args...]`.
const modeCNIExec = "cni-exec"

// nodeCNIExec is the invoke.Exec the kubelet hands libcni. On a real node
// a CNI plugin sees the node's filesystem; here the node's filesystem is
// RootDir, so a plugin talking to a node daemon through a socket under
// /var/run (which a hostPath volume of that daemon puts under
// <RootDir>/var/run) would look at the machine's /var/run instead. So
// plugins run through the cni-exec mode of the kubelet binary, in a mount
// namespace where every directory of <RootDir>/var/run is bind-mounted over
// the machine's /run/<dir>. Without such directories the plugin runs
// directly. Otherwise it behaves like invoke.RawExec: same stdin, env,
// stdout and stderr, same error decoding.
type nodeCNIExec struct {
	version.PluginDecoder
	// SelfBinary is the kubelet binary (it must call MaybeRunHidden).
	SelfBinary string
	RootDir    string
	// Stderr gets the plugin's stderr when it succeeds, like RawExec.
	Stderr io.Writer
}

var _ invoke.Exec = (*nodeCNIExec)(nil)

func newNodeCNIExec(selfBinary, rootDir string) *nodeCNIExec {
	return &nodeCNIExec{SelfBinary: selfBinary, RootDir: rootDir, Stderr: os.Stderr}
}

func (e *nodeCNIExec) FindInPath(plugin string, paths []string) (string, error) {
	return invoke.FindInPath(plugin, paths)
}

// ExecPlugin follows invoke.RawExec.ExecPlugin (libcni v1.3): retry on
// "text file busy", decode a failure from stdout (a CNI error object) or
// stderr, copy stderr out on success.
func (e *nodeCNIExec) ExecPlugin(ctx context.Context, pluginPath string, stdinData []byte, environ []string) ([]byte, error) {
	binds, err := nodeRunBinds(e.RootDir)
	if err != nil {
		return nil, &types.Error{Code: types.ErrInternal, Msg: fmt.Sprintf("preparing the node's view for CNI plugin %s: %v", pluginPath, err)}
	}
	name, args := pluginPath, []string(nil)
	if len(binds) > 0 {
		name, args = e.SelfBinary, []string{modeCNIExec, e.RootDir, pluginPath}
	}
	var stdout, stderr bytes.Buffer
	for i := 0; i <= 5; i++ {
		stdout.Reset()
		stderr.Reset()
		// Through cni-exec the plugin still gets argv [pluginPath].
		c := exec.CommandContext(ctx, name, args...)
		c.Env = environ
		c.Stdin = bytes.NewReader(stdinData)
		c.Stdout = &stdout
		c.Stderr = &stderr
		err := c.Run()
		if err == nil {
			break
		}
		if strings.Contains(err.Error(), "text file busy") {
			time.Sleep(time.Second)
			continue
		}
		return nil, cniPluginErr(err, stdout.Bytes(), stderr.Bytes())
	}
	if e.Stderr != nil && stderr.Len() > 0 {
		_, _ = stderr.WriteTo(e.Stderr)
	}
	return stdout.Bytes(), nil
}

// cniPluginErr is invoke.RawExec's pluginErr.
func cniPluginErr(err error, stdout, stderr []byte) error {
	emsg := types.Error{}
	if len(stdout) == 0 {
		if len(stderr) == 0 {
			emsg.Msg = fmt.Sprintf("netplugin failed with no error message: %v", err)
		} else {
			emsg.Msg = fmt.Sprintf("netplugin failed: %q: %v", string(stderr), err)
		}
	} else if perr := json.Unmarshal(stdout, &emsg); perr != nil {
		emsg.Msg = fmt.Sprintf("netplugin failed but error parsing its diagnostic message %q: %v", string(stdout), perr)
	}
	return &emsg
}

// runBind is one node runtime directory and where plugins see it.
type runBind struct{ src, dst string }

// nodeRunBinds lists the directories under <rootDir>/var/run and the
// machine's directories they shadow (/var/run resolved, /run on Debian).
// /var/run/netns is skipped: it is the machine's for the node too (see
// realHostPrefixes), and CNI_NETNS points there.
func nodeRunBinds(rootDir string) ([]runBind, error) {
	if rootDir == "" {
		return nil, nil
	}
	nodeRun, err := resolveInRoot(rootDir, "/var/run")
	if err != nil {
		return nil, err
	}
	entries, err := os.ReadDir(nodeRun)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	hostRun, err := filepath.EvalSymlinks("/var/run")
	if err != nil {
		hostRun = "/run"
	}
	var binds []runBind
	for _, ent := range entries {
		name := ent.Name()
		if slices.Contains(realHostPrefixes, "/var/run/"+name) || slices.Contains(realHostPrefixes, "/run/"+name) {
			continue
		}
		src, err := resolveInRoot(rootDir, "/var/run/"+name)
		if err != nil {
			return nil, err
		}
		if st, err := os.Stat(src); err != nil || !st.IsDir() {
			continue
		}
		binds = append(binds, runBind{src: src, dst: filepath.Join(hostRun, name)})
	}
	return binds, nil
}

// runCNIExec is the cni-exec mode: in a new mount namespace (/ rslave, so
// the machine's mounts still show but ours stay here), bind the node's
// runtime directories over the machine's, then exec the plugin in place
// with our stdin/stdout/stderr and environment: its output and exit status
// are the caller's.
func runCNIExec(args []string) error {
	if len(args) < 2 {
		return errors.New("usage: cni-exec ROOT_DIR PLUGIN [ARG ...]")
	}
	rootDir, argv := args[0], args[1:]
	binds, err := nodeRunBinds(rootDir)
	if err != nil {
		return err
	}
	if len(binds) > 0 {
		// The namespace belongs to this thread; exec happens on it.
		runtime.LockOSThread()
		if err := unix.Unshare(unix.CLONE_NEWNS); err != nil {
			return fmt.Errorf("unshare mount namespace: %w", err)
		}
		if err := unix.Mount("", "/", "", unix.MS_SLAVE|unix.MS_REC, ""); err != nil {
			return fmt.Errorf("making / rslave: %w", err)
		}
		for _, b := range binds {
			if err := ensureRunDir(b.dst); err != nil {
				return err
			}
			if err := unix.Mount(b.src, b.dst, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
				return fmt.Errorf("bind-mounting %s on %s: %w", b.src, b.dst, err)
			}
		}
	}
	for i := 0; ; i++ {
		err := syscall.Exec(argv[0], argv, os.Environ())
		if errors.Is(err, syscall.ETXTBSY) && i < 5 {
			time.Sleep(time.Second)
			continue
		}
		return fmt.Errorf("exec %s: %w", argv[0], err)
	}
}

// ensureRunDir creates the machine's mount point if it is missing (never
// touching what is there) and refuses anything but a directory.
func ensureRunDir(dir string) error {
	st, err := os.Lstat(dir)
	if errors.Is(err, fs.ErrNotExist) {
		if err := os.Mkdir(dir, 0o755); err != nil && !errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("creating mount point %s: %w", dir, err)
		}
		st, err = os.Lstat(dir)
	}
	if err != nil {
		return err
	}
	if !st.IsDir() {
		return fmt.Errorf("mount point %s is not a directory (%s)", dir, st.Mode().Type())
	}
	return nil
}
