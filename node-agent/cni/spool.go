package cni

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/weft-mesh/weft/pkg/atomicfile"
)

// ErrDiscard, wrapped in a handler's error, tells DrainSpool that the event
// can never succeed: the spool file is removed instead of retried.
var ErrDiscard = errors.New("discard event")

const spoolExt = ".json"

// spoolName is the file for one (containerID, op): a re-spooled event
// replaces the older copy.
func spoolName(containerID string, op Op) string {
	safe := containerID != "" && len(containerID) <= 128
	for _, r := range containerID {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' || r == '.') {
			safe = false
			break
		}
	}
	if !safe || strings.HasPrefix(containerID, ".") {
		sum := sha256.Sum256([]byte(containerID))
		containerID = "h-" + hex.EncodeToString(sum[:16])
	}
	return containerID + "-" + string(op) + spoolExt
}

// Spool writes ev to dir atomically (temporary file, fsync, rename), one file
// per containerID and op. A DEL also removes a spooled ADD of the same
// container: the agent never saw that ADD and must not enrol a pod that is
// gone when the spool is replayed.
func Spool(dir string, ev Event) (string, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", fmt.Errorf("spool dir: %w", err)
	}
	if ev.Op == OpDel {
		if err := removeSpooledAdd(dir, ev.ContainerID); err != nil {
			return "", err
		}
	}
	data, err := json.Marshal(ev)
	if err != nil {
		return "", err
	}
	path := filepath.Join(dir, spoolName(ev.ContainerID, ev.Op))
	if err := atomicfile.Write(path, data, 0o600); err != nil {
		return "", fmt.Errorf("spool event: %w", err)
	}
	return path, nil
}

func removeSpooledAdd(dir, containerID string) error {
	err := os.Remove(filepath.Join(dir, spoolName(containerID, OpAdd)))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("drop spooled ADD: %w", err)
	}
	return nil
}

type spooled struct {
	path  string
	mtime time.Time
	ev    Event
}

// DrainSpool replays the events spooled in dir, oldest first (file mtime,
// then event time, then name), calling handler for each and removing the file
// once handled. It stops at the first handler error so that order is kept
// (an ADD is never replayed after a later DEL of the same pod) and returns
// that error; the remaining files stay for the next drain. A handler error
// wrapping ErrDiscard, or a file that does not hold a valid event, removes the
// file and goes on. A missing dir is not an error. It returns how many events
// were handled.
func DrainSpool(dir string, handler func(context.Context, Event) error) (int, error) {
	return drainSpool(context.Background(), dir, handler)
}

func drainSpool(ctx context.Context, dir string, handler func(context.Context, Event) error) (int, error) {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("read spool: %w", err)
	}
	var items []spooled
	var bad []error
	for _, e := range entries {
		name := e.Name()
		if e.IsDir() || strings.HasPrefix(name, ".") || !strings.HasSuffix(name, spoolExt) {
			continue
		}
		path := filepath.Join(dir, name)
		info, err := e.Info()
		if err != nil {
			continue // removed meanwhile (e.g. a DEL dropped a spooled ADD)
		}
		data, err := os.ReadFile(path)
		if err != nil {
			continue
		}
		var ev Event
		err = json.Unmarshal(data, &ev)
		if err == nil {
			err = ev.Validate()
		}
		if err != nil {
			bad = append(bad, fmt.Errorf("spool file %s: %w (removed)", name, err))
			_ = os.Remove(path)
			continue
		}
		items = append(items, spooled{path: path, mtime: info.ModTime(), ev: ev})
	}
	sort.SliceStable(items, func(i, j int) bool {
		a, b := items[i], items[j]
		if !a.mtime.Equal(b.mtime) {
			return a.mtime.Before(b.mtime)
		}
		if !a.ev.Time.Equal(b.ev.Time) {
			return a.ev.Time.Before(b.ev.Time)
		}
		return a.path < b.path
	})
	handled := 0
	for _, it := range items {
		if err := ctx.Err(); err != nil {
			return handled, err
		}
		// A spooled ADD may have been dropped by a later DEL since we listed.
		if _, err := os.Stat(it.path); errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err := handler(ctx, it.ev); err != nil {
			if errors.Is(err, ErrDiscard) {
				bad = append(bad, fmt.Errorf("spooled %s discarded: %w", it.ev.String(), err))
				_ = os.Remove(it.path)
				continue
			}
			return handled, errors.Join(append(bad, fmt.Errorf("replay spooled %s: %w", it.ev.String(), err))...)
		}
		handled++
		if err := os.Remove(it.path); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return handled, fmt.Errorf("remove handled spool file: %w", err)
		}
	}
	return handled, errors.Join(bad...)
}
