package e2e

// Sending traffic through the mesh from the curl pod the suites deploy, and
// summing up what answered.

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/weft-mesh/weft/internal/await"
)

// httpCode runs curl in a pod and returns the HTTP status, "000" when the
// connection failed (refused, reset, timed out); headers are curl -H values.
func (e *env) httpCode(t *testing.T, ns, target, url string, headers ...string) string {
	t.Helper()
	args := []string{"-n", ns, "exec", target, "--", "curl", "-sS", "-o", "/dev/null", "-m", "5", "-w", "%{http_code}"}
	for _, h := range headers {
		args = append(args, "-H", h)
	}
	out, _ := e.kubectl(append(args, url)...)
	if out == "" {
		return "000"
	}
	return out
}

// productpage fetches the page from the curl pod, signed in as user if set
// (productpage's login cookie, as the tutorial's "Sign in" does).
func (e *env) productpage(t *testing.T, user string) string {
	t.Helper()
	args := []string{"exec", "deploy/curl", "--", "curl", "-sS", "-m", "20"}
	if user != "" {
		args = append(args, "-b", "user="+user)
	}
	out, err := e.kubectl(append(args, "http://productpage:9080/productpage")...)
	if err != nil {
		t.Logf("productpage: %v", err)
	}
	return out
}

// pageSummary is the part of a productpage that tells which reviews
// version answered and what went wrong.
func pageSummary(page string) string {
	var out []string
	for _, re := range []string{`color="[a-z]+"`, `reviews-v[0-9]-[a-z0-9-]+`, `[^>]*unavailable[^<]*`, `<title>.*</title>`} {
		out = append(out, regexp.MustCompile(re).FindAllString(page, -1)...)
	}
	if len(out) == 0 {
		return fmt.Sprintf("(%d bytes) %.300s", len(page), page)
	}
	return strings.Join(out, " | ")
}

// codes counts the HTTP status codes of n requests from the curl pod.
func (e *env) codes(t *testing.T, url string, n int) map[string]int {
	t.Helper()
	out, _ := e.kubectl("exec", "deploy/curl", "--", "sh", "-c",
		fmt.Sprintf(`for i in $(seq 1 %d); do curl -sS -o /dev/null -m 10 -w '%%{http_code}\n' %s; done`, n, url))
	got := map[string]int{}
	for _, c := range strings.Fields(out) {
		got[c]++
	}
	return got
}

// reviewsVersions asks reviews n times from the curl pod (as user when set:
// the end-user header productpage would send) and counts the versions.
func (e *env) reviewsVersions(t *testing.T, user string, n int) map[string]int {
	t.Helper()
	var headers []string
	if user != "" {
		headers = append(headers, "end-user: "+user)
	}
	return e.reviewsVersionsFrom(t, "default", "deploy/curl", n, headers...)
}

// reviewsVersionsFrom asks reviews.default n times from target in
// namespace ns with the given request headers and counts the versions.
func (e *env) reviewsVersionsFrom(t *testing.T, ns, target string, n int, headers ...string) map[string]int {
	t.Helper()
	hdr := ""
	for _, h := range headers {
		hdr += " -H '" + h + "'"
	}
	out, err := e.kubectl("-n", ns, "exec", target, "--", "sh", "-c",
		fmt.Sprintf(`for i in $(seq 1 %d); do curl -sS -m 10%s reviews.default:9080/reviews/0; echo; done`, n, hdr))
	if err != nil {
		t.Logf("reviews requests: %v", err)
	}
	got := map[string]int{}
	dec := json.NewDecoder(strings.NewReader(out))
	for dec.More() {
		var r struct {
			Version string `json:"version"`
		}
		if err := dec.Decode(&r); err != nil {
			got["undecodable"]++
			break
		}
		got[r.Version]++
	}
	return got
}

// wantVersions checks that only the wanted versions answered (at least one).
func wantVersions(got map[string]int, want map[string]bool) error {
	if len(got) == 0 {
		return fmt.Errorf("no answers")
	}
	for v := range got {
		if !want[v] {
			return fmt.Errorf("versions %v, want only %v", got, want)
		}
	}
	return nil
}

// loadResult sums up a load run.
type loadResult struct {
	ok, failed int
	degraded   int // answered 200 without a dependency's part
	max        time.Duration
	errors     []string
}

func (r loadResult) String() string {
	s := fmt.Sprintf("%d requests ok (%d of them degraded), %d failed, slowest %s", r.ok, r.degraded, r.failed, r.max.Round(time.Millisecond))
	if len(r.errors) > 0 {
		s += fmt.Sprintf("; errors: %q", r.errors[:min(12, len(r.errors))])
	}
	return s
}

// maxLoadBacklog bounds the requests startLoad has asked for and not yet
// seen answered.
const maxLoadBacklog = 3

// startLoad runs a client in the enrolled curl pod that makes one request,
// on a new connection, per line the test writes to its stdin (every 50 ms,
// fewer when the client falls behind), until the returned stop is called
// and has seen atLeast requests answered.
func (e *env) startLoad(t *testing.T, url string) (stop func(t *testing.T, atLeast int) loadResult) {
	t.Helper()
	// Bookinfo's productpage answers 200 when a dependency fails ("Sorry,
	// product reviews are currently unavailable"): such a page is a failed
	// request too, reported on a line of its own.
	script := fmt.Sprintf(`while read -r _; do out=$(curl -sS --connect-timeout 5 -m 5 -w '\n%%{http_code} %%{time_total}' %s 2>&1); `+
		`case "$out" in *"currently unavailable"*) echo "degraded: $(echo "$out" | grep -o 'Sorry[^<]*' | head -n 1)";; esac; `+
		`echo "$out" | tail -n 1; done`, url)
	cmd := exec.Command(filepath.Join(assetsDir(), "kubectl"), "exec", "-i", "deploy/curl", "--", "sh", "-c", script)
	cmd.Env = append(os.Environ(), "KUBECONFIG="+e.c.Kubeconfig)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = cmd.Stdout
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var (
		mu   sync.Mutex
		res  loadResult
		done = make(chan struct{})
		sent int
	)
	line := regexp.MustCompile(`^(\d{3}) ([0-9.]+)$`)
	start := time.Now()
	go func() {
		defer close(done)
		s := bufio.NewScanner(stdout)
		for s.Scan() {
			mu.Lock()
			// When, to match a failure with the step of the run.
			at := fmt.Sprintf("+%.1fs ", time.Since(start).Seconds())
			if strings.HasPrefix(s.Text(), "degraded: ") {
				res.degraded++
				res.errors = append(res.errors, at+s.Text())
			} else if m := line.FindStringSubmatch(s.Text()); m != nil {
				secs, _ := strconv.ParseFloat(m[2], 64)
				d := time.Duration(secs * float64(time.Second))
				res.max = max(res.max, d)
				if m[1] == "200" {
					res.ok++
				} else {
					res.failed++
					res.errors = append(res.errors, at+"status "+m[1])
				}
			} else {
				res.errors = append(res.errors, at+s.Text())
			}
			mu.Unlock()
		}
	}()
	tick := time.NewTicker(50 * time.Millisecond)
	quit, writerDone := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(writerDone)
		defer tick.Stop()
		for {
			select {
			case <-quit:
				stdin.Close()
				return
			case <-tick.C:
				// At most a few requests queued: a client slower than the
				// tick (a busy machine) must not build a backlog that
				// outlasts the run.
				mu.Lock()
				backlog := sent - res.ok - res.failed
				mu.Unlock()
				if backlog >= maxLoadBacklog {
					continue
				}
				if _, err := io.WriteString(stdin, "go\n"); err != nil {
					return
				}
				sent++
			}
		}
	}()
	return func(t *testing.T, atLeast int) loadResult {
		t.Helper()
		// A busy machine answers fewer requests in the same time: the run
		// lasts until atLeast were answered (2 min at most), not a fixed time.
		await.NoErrorWithin(t, 2*time.Minute, fmt.Sprintf("%d load requests answered", atLeast), func() error {
			mu.Lock()
			defer mu.Unlock()
			if got := res.ok + res.failed; got < atLeast {
				return fmt.Errorf("%d answered", got)
			}
			return nil
		})
		close(quit)
		<-writerDone
		// Requests queued behind a slow one still run; give them time.
		waitErr := make(chan error, 1)
		go func() { <-done; waitErr <- cmd.Wait() }()
		select {
		case err := <-waitErr:
			var ee *exec.ExitError
			if err != nil && !errors.As(err, &ee) {
				t.Errorf("load client: %v", err)
			}
		case <-time.After(2 * time.Minute):
			cmd.Process.Kill()
			t.Errorf("load client did not finish")
		}
		mu.Lock()
		defer mu.Unlock()
		// Every request the test asked for must have an answer: a client
		// whose exec stream broke must not pass for a quiet one.
		if got := res.ok + res.failed; got < sent {
			t.Errorf("load client answered %d of %d requests (%v)", got, sent, res.errors)
		}
		return res
	}
}
