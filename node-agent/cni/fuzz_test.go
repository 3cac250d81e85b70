package cni

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"testing"
)

// spoolSeeds are spool files as the plugin writes them, and malformed ones.
var spoolSeeds = []string{
	`{"op":"ADD","podNamespace":"default","podName":"productpage-1","podUID":"1234","netns":"/var/run/netns/pod1","hostInterface":"veth1","hostIfindex":7,"ips":["10.244.0.5","fd00::5"],"containerID":"c0ffee","time":"2026-01-02T03:04:05Z"}`,
	`{"op":"DEL","containerID":"c0ffee"}`,
	`{"op":"DEL","containerID":"../../etc/passwd","time":"2026-01-02T03:04:05+01:00"}`,
	`{"op":"ADD","containerID":"x","ips":["10.0.0.1%eth0","::ffff:10.0.0.1"]}`,
	`{"op":"ADD","containerID":"x","ips":["not-an-ip"]}`,
	`{"op":"ADD","containerID":"x","hostIfindex":-1}`,
	`{"op":"CHECK","containerID":"x"}`,
	`{"op":"ADD","containerID":""}`,
	`{"op":"ADD","containerID":"x","hostIfindex":1e99}`,
	`{"op":"ADD","containerID":"x","time":"yesterday"}`,
	`{"op":"ADD","containerID":"x"} trailing`,
	`{"op":"ADD","containerID":"x","op":"DEL"}`,
	`null`, `[]`, `{}`, ``, `{"op":`,
}

// FuzzSpoolFile feeds arbitrary bytes to the agent as a spool file (a file
// anyone who can write the spool directory controls) and as a POST to the
// agent's socket. Properties: no panic; the handler only ever sees events
// that validate; a spool file is always consumed (handled, or removed as
// invalid), never left to be retried forever; the server answers 200
// exactly when it handed the event to the handler; and a handled event
// spooled again by the plugin's Spool replays as the same event.
func FuzzSpoolFile(f *testing.F) {
	for _, s := range spoolSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, "c0ffee-ADD.json"), data, 0o600); err != nil {
			t.Fatal(err)
		}
		var got []Event
		handler := func(_ context.Context, ev Event) error {
			if err := ev.Validate(); err != nil {
				t.Fatalf("handler got an invalid event %+v: %v", ev, err)
			}
			got = append(got, ev)
			return nil
		}
		n, _ := DrainSpool(dir, handler)
		if n != len(got) || n > 1 {
			t.Fatalf("DrainSpool handled %d, handler saw %d", n, len(got))
		}
		if left := spoolFiles(t, dir); len(left) != 0 {
			t.Fatalf("spool file not consumed: %v", left)
		}

		// Round trip: what the agent accepted, spooled again, replays equal.
		if len(got) == 1 {
			want := got[0]
			if _, err := Spool(dir, want); err != nil {
				t.Fatalf("Spool(%+v): %v", want, err)
			}
			got = nil
			if n, err := DrainSpool(dir, handler); n != 1 || err != nil {
				t.Fatalf("replay of a re-spooled event: %d, %v", n, err)
			}
			if !sameEvent(got[0], want) {
				t.Fatalf("re-spooled event changed:\n got %+v\nwant %+v", got[0], want)
			}
		}

		// The same bytes on the agent's socket.
		got = nil
		s := NewServer(filepath.Join(dir, "unused.sock"), handler)
		rec := httptest.NewRecorder()
		s.serveEvent(rec, httptest.NewRequest(http.MethodPost, EventPath, bytes.NewReader(data)))
		if (rec.Code == http.StatusOK) != (len(got) == 1) {
			t.Fatalf("server answered %d, handler called %d times", rec.Code, len(got))
		}
	})
}

func sameEvent(a, b Event) bool {
	at, bt := a.Time, b.Time
	a.Time, b.Time = bt, bt
	return at.Equal(bt) && a.Op == b.Op && a.PodNamespace == b.PodNamespace && a.PodName == b.PodName &&
		a.PodUID == b.PodUID && a.Netns == b.Netns && a.HostInterface == b.HostInterface &&
		a.HostIfindex == b.HostIfindex && slices.Equal(a.IPs, b.IPs) && a.ContainerID == b.ContainerID
}

// FuzzSpoolName: every container ID (the runtime's, but also whatever a DEL
// carries) maps to a plain file name inside the spool directory.
func FuzzSpoolName(f *testing.F) {
	for _, s := range []string{"c0ffee", "", ".", "..", "../x", "a/b", ".hidden", "x\x00y", string(make([]byte, 200))} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, id string) {
		for _, op := range []Op{OpAdd, OpDel} {
			name := spoolName(id, op)
			if name != filepath.Base(name) || name[0] == '.' || filepath.Ext(name) != spoolExt || len(name) > 255 {
				t.Fatalf("spoolName(%q, %s) = %q: not a plain spool file name", id, op, name)
			}
			if other := spoolName(id, map[Op]Op{OpAdd: OpDel, OpDel: OpAdd}[op]); other == name {
				t.Fatalf("ADD and DEL of %q share the file %q", id, name)
			}
		}
	})
}

// FuzzConflist edits arbitrary CNI configuration lists (the node's files,
// written by other installers) the way Install and Uninstall do.
// Properties: no panic; installing gives valid JSON whose last plugin is
// weft-cni exactly once, with every other plugin kept in order; and
// uninstalling gives back the bytes there were before (remove(append(x))
// == x), so installing again is a no-op.
func FuzzConflist(f *testing.F) {
	for _, c := range conflistCases {
		f.Add([]byte(c.content))
	}
	for _, s := range []string{
		`{"plugins":[{"type":"ptp"},{"type":"weft-cni","spoolDir":"/old"},{"type":"portmap"}]}`,
		`{"plugins":[{"type":"weft-cni"}]}`,
		`{"plugins":[]}`, `{"plugins":{}}`, `{"plugins":[{"type":""}]}`, `{"plugins":[1]}`,
		`{"plugins":[{"type":"ptp"}],"plugins":[{"type":"bridge"}]}`,
		"{\"plugins\" : [ {\"type\":\"ptp\"} ,\n\t{\"type\":\"weft-cni\"} ] } ",
		`{"plugins":[{"type":"ptp"}]}x`, `[{"type":"ptp"}]`, `{"plugins":[{"type":"ptp"}]`, ``,
	} {
		f.Add([]byte(s))
	}
	entry := PluginConfEntry{Type: PluginType, AgentSocket: "/var/run/weft/cni.sock", SpoolDir: "/var/run/weft/cni-spool", LogLevel: "info"}
	f.Fuzz(func(t *testing.T, data []byte) {
		if _, err := parseConflist(data); err != nil {
			return
		}
		base, _, err := removeEntries(data, PluginType)
		if err != nil {
			t.Fatalf("removeEntries on a parsable conflist: %v", err)
		}
		baseDoc, err := parseConflist(base)
		if err != nil {
			return // only weft-cni was there: nothing to chain onto
		}
		if slices.Contains(baseDoc.types, PluginType) {
			t.Fatalf("removeEntries left weft-cni in %q", base)
		}
		installed, err := appendEntry(base, entry)
		if err != nil {
			t.Fatalf("appendEntry(%q): %v", base, err)
		}
		if !json.Valid(installed) {
			t.Fatalf("installing into %q gave invalid JSON %q", base, installed)
		}
		doc, err := parseConflist(installed)
		if err != nil {
			t.Fatalf("installed conflist %q does not parse: %v", installed, err)
		}
		if want := append(slices.Clone(baseDoc.types), PluginType); !slices.Equal(doc.types, want) {
			t.Fatalf("plugins after install %q, want %q", doc.types, want)
		}
		if ok, err := entryInPlace(doc, entry); !ok || err != nil {
			t.Fatalf("installed entry not recognized as in place (%v): %q", err, installed)
		}
		back, n, err := removeEntries(installed, PluginType)
		if err != nil || n != 1 || !bytes.Equal(back, base) {
			t.Fatalf("uninstall did not restore the conflist (removed %d, %v):\n got %q\nwant %q", n, err, back, base)
		}
	})
}
