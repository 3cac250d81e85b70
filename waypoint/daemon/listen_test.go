package daemon

import (
	"net"
	"testing"

	"github.com/weft-mesh/weft/pkg/connlimit"
)

// TestTrafficListenersAreCapped: --max-connections puts the HBONE and
// gateway listeners under pkg/connlimit's cap (whose holding back of the
// excess TestCappedHoldsAtMostMax attacks); 0 leaves them uncapped.
func TestTrafficListenersAreCapped(t *testing.T) {
	for _, tc := range []struct {
		max    int
		capped bool
	}{{1, true}, {0, false}} {
		cfg := Config{MaxConnections: tc.max}
		ln, err := cfg.listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		a, err := ln.Accept()
		if err != nil {
			t.Fatal(err)
		}
		if _, capped := a.(*connlimit.Conn); capped != tc.capped {
			t.Errorf("--max-connections %d: accepted a %T, capped %v, want %v", tc.max, a, capped, tc.capped)
		}
		a.Close()
		c.Close()
		ln.Close()
	}
}
