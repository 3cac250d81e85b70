// Package mountinfo reads the calling process's mount table.
package mountinfo

import (
	"bufio"
	"os"
	"slices"
	"strconv"
	"strings"
)

// MountPoints lists every mount point in /proc/self/mountinfo, in table
// order (a path mounted over several times appears several times).
func MountPoints() ([]string, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if fields := strings.Fields(sc.Text()); len(fields) > 4 {
			out = append(out, Unescape(fields[4]))
		}
	}
	return out, sc.Err()
}

// Under lists the distinct mount points at or below dir, deepest first:
// the order in which to unmount them.
func Under(dir string) ([]string, error) {
	all, err := MountPoints()
	if err != nil {
		return nil, err
	}
	var out []string
	for _, mp := range all {
		if mp == dir || strings.HasPrefix(mp, dir+"/") {
			out = append(out, mp)
		}
	}
	slices.SortStableFunc(out, func(a, b string) int { return len(b) - len(a) })
	return slices.Compact(out), nil
}

// Unescape undoes mountinfo's octal escapes (`\040` for a space, ...).
func Unescape(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
