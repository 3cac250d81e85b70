package agent

import (
	"errors"
	"fmt"
	"os"
	"syscall"

	"github.com/weft-mesh/weft/bpf"
	"github.com/weft-mesh/weft/node-agent/cni"
)

// Uninstall removes what agents left on the node, so that removing Weft
// leaves nothing behind: weft-cni's conflist entry and binary, the capture
// programs (links and maps pinned under BPFDir; a program detaches when its
// last pin and handle are gone), the policy-routing rule and table, and the
// notrack table. Enrolled pods' traffic goes direct afterwards. It is
// idempotent and runs in the node's network namespace
// (`weft-node-agent uninstall`, one-shot per node, with the agent stopped).
func Uninstall(cfg Config) error {
	var errs []error
	if err := cni.Uninstall(cni.InstallOptions{BinDir: cfg.CNIBinDir, ConfDir: cfg.CNIConfDir}); err != nil {
		errs = append(errs, fmt.Errorf("weft-cni: %w", err))
	}
	if err := bpf.RemovePins(cfg.BPFDir); err != nil {
		errs = append(errs, err)
	}
	if err := os.Remove(cfg.BPFDir); err != nil && !errors.Is(err, os.ErrNotExist) {
		errs = append(errs, fmt.Errorf("bpf pin directory: %w", err))
	}
	errs = append(errs, bpf.DefaultPolicyRouting().Remove(), bpf.DefaultNotrack().Remove(), bpf.DefaultNATSteering().Remove())
	if cfg.RunDir != "" {
		for _, p := range []string{cfg.socket(), cfg.spoolDir(), cfg.lease()} {
			if err := os.RemoveAll(p); err != nil {
				errs = append(errs, err)
			}
		}
		// The directory itself only if nothing else lives there and it is
		// not a mount point (EBUSY: the hostPath volume of a cleanup pod).
		if err := os.Remove(cfg.RunDir); err != nil && !errors.Is(err, os.ErrNotExist) && !errors.Is(err, syscall.ENOTEMPTY) && !errors.Is(err, syscall.EBUSY) {
			errs = append(errs, fmt.Errorf("run directory: %w", err))
		}
	}
	return errors.Join(errs...)
}
