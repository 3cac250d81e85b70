package hbone

import (
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
)

// Window/frame variants compared by the throughput benchmark.
var benchOpts = []struct {
	name string
	o    Options
}{
	{"ztunnel_s4M_c16M_f1M", Options{StreamWindow: 4 << 20, ConnWindow: 16 << 20, MaxFrameSize: 1 << 20}},
	{"s1M_c4M_f1M", Options{StreamWindow: 1 << 20, ConnWindow: 4 << 20, MaxFrameSize: 1 << 20}},
	{"s4M_c16M_f16K", Options{StreamWindow: 4 << 20, ConnWindow: 16 << 20, MaxFrameSize: 16 << 10}},
	{"s4M_c16M_f64K", Options{StreamWindow: 4 << 20, ConnWindow: 16 << 20, MaxFrameSize: 64 << 10}},
	{"s16M_c64M_f1M", Options{StreamWindow: 16 << 20, ConnWindow: 64 << 20, MaxFrameSize: 1 << 20}},
	{"s256K_c1M_f16K", Options{StreamWindow: 256 << 10, ConnWindow: 1 << 20, MaxFrameSize: 16 << 10}},
}

const chunk = 1 << 20 // bytes per benchmark iteration

// benchWrite is the application's write/read size at the tunnel ends.
const benchWrite = 64 << 10

// bulkTarget: "u" = sink (reads to EOF), "d" = source (sends the 8-byte
// big-endian count it is asked for, then FIN).
func bulkTarget(b *testing.B) string {
	return startTarget(b, func(c *net.TCPConn) {
		var mode [1]byte
		if _, err := io.ReadFull(c, mode[:]); err != nil {
			return
		}
		buf := make([]byte, benchWrite)
		if mode[0] == 'u' {
			for {
				if _, err := c.Read(buf); err != nil {
					return
				}
			}
		}
		var n [8]byte
		io.ReadFull(c, n[:])
		for left := int64(binary.BigEndian.Uint64(n[:])); left > 0; {
			w, err := c.Write(buf[:min(int64(len(buf)), left)])
			if err != nil {
				return
			}
			left -= int64(w)
		}
		c.CloseWrite()
	})
}

// bulk moves total bytes in benchWrite-sized writes over s and waits
// until the far end has them.
func bulk(b *testing.B, s Stream, upload bool, total int64) {
	buf := make([]byte, benchWrite)
	if upload {
		s.Write([]byte{'u'})
		for left := total; left > 0; left -= int64(len(buf)) {
			if _, err := s.Write(buf[:min(int64(len(buf)), left)]); err != nil {
				b.Fatal(err)
			}
		}
		s.CloseWrite()
		io.Copy(io.Discard, s) // EOF once the sink got everything and closed
		return
	}
	var hdr [9]byte
	hdr[0] = 'd'
	binary.BigEndian.PutUint64(hdr[1:], uint64(total))
	s.Write(hdr[:])
	n, err := io.CopyBuffer(io.Discard, struct{ io.Reader }{s}, buf)
	if err != nil || n != total {
		b.Fatalf("downloaded %d of %d: %v", n, total, err)
	}
}

// BenchmarkThroughput: one stream client -> HBONE server -> Pipe -> TCP
// target, against a direct loopback TCP connection to the same target,
// measured in the same run. Upload and download, per window/frame setting.
func BenchmarkThroughput(b *testing.B) {
	for _, dir := range []string{"upload", "download"} {
		for _, bo := range benchOpts {
			b.Run(dir+"/"+bo.name, func(b *testing.B) {
				e := newEnv(b, bo.o)
				target := bulkTarget(b)
				total := int64(b.N) * chunk
				up := dir == "upload"

				direct, err := net.Dial("tcp", target)
				if err != nil {
					b.Fatal(err)
				}
				t0 := time.Now()
				bulk(b, direct.(*net.TCPConn), up, total)
				directDur := time.Since(t0)
				direct.Close()

				s := e.dial(b, target)
				b.SetBytes(chunk)
				b.ResetTimer()
				t0 = time.Now()
				bulk(b, s, up, total)
				tunnelDur := time.Since(t0)
				b.StopTimer()
				s.Close()

				directMBs := float64(total) / 1e6 / directDur.Seconds()
				tunnelMBs := float64(total) / 1e6 / tunnelDur.Seconds()
				b.ReportMetric(directMBs, "direct_MB/s")
				b.ReportMetric(tunnelMBs/directMBs, "ratio")
			})
		}
	}
}

// BenchmarkLatency: 1-byte ping-pong through the tunnel and a loopback echo,
// against the same echo dialled directly.
func BenchmarkLatency(b *testing.B) {
	e := newEnv(b, Options{})
	pingPong := func(s io.ReadWriter, n int) time.Duration {
		buf := []byte{1}
		t0 := time.Now()
		for range n {
			if _, err := s.Write(buf); err != nil {
				b.Fatal(err)
			}
			if _, err := io.ReadFull(s, buf); err != nil {
				b.Fatal(err)
			}
		}
		return time.Since(t0)
	}
	direct, err := net.Dial("tcp", e.echo)
	if err != nil {
		b.Fatal(err)
	}
	defer direct.Close()
	pingPong(direct, 100) // warm up
	directDur := pingPong(direct, b.N)

	s := e.dial(b, e.echo)
	defer s.Close()
	pingPong(s, 100)
	b.ResetTimer()
	tunnelDur := pingPong(s, b.N)
	b.StopTimer()
	directNs := float64(directDur.Nanoseconds()) / float64(b.N)
	tunnelNs := float64(tunnelDur.Nanoseconds()) / float64(b.N)
	b.ReportMetric(directNs, "direct_ns")
	b.ReportMetric((tunnelNs-directNs)/1000, "added_us")
}

// BenchmarkStreamSetup: open, half-close and finish one stream on a warm
// pooled connection, with a handler that accepts without dialling anything,
// so it measures HBONE alone. allocs/op counts both client and server
// sides (same process). Compared with a loopback TCP connect+close.
func BenchmarkStreamSetup(b *testing.B) {
	e := newEnv(b, Options{})
	srv := &Server{TLS: e.srv.TLS, Handler: func(ctx context.Context, req *Request) error {
		st, err := req.Accept()
		if err != nil {
			return err
		}
		io.Copy(io.Discard, st)
		return st.CloseWrite()
	}}
	tl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	l := &countingListener{Listener: tl}
	go srv.Serve(l)
	defer srv.Close()
	addr := l.Addr().String()
	auth := tlsconfig.AuthorizeID(serverID)
	open := func() {
		s, err := e.dialer.Dial(context.Background(), addr, auth, "10.0.0.1:80", nil)
		if err != nil {
			b.Fatal(err)
		}
		s.CloseWrite()
		if _, err := io.Copy(io.Discard, s); err != nil {
			b.Fatal(err)
		}
		s.Close()
	}
	open() // warm the pool

	const directN = 500
	t0 := time.Now()
	for range directN {
		c, err := net.Dial("tcp", e.echo)
		if err != nil {
			b.Fatal(err)
		}
		c.(*net.TCPConn).CloseWrite()
		io.Copy(io.Discard, c)
		c.Close()
	}
	directNs := float64(time.Since(t0).Nanoseconds()) / directN

	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		open()
	}
	b.StopTimer()
	b.ReportMetric(directNs, "direct_tcp_ns")
	if n := l.count(); n != 1 {
		b.Fatalf("pool dialled %d connections, want 1", n)
	}
}

// BenchmarkParallelStreams: many concurrent streams multiplexed over the one
// pooled connection, each doing a 1-byte round trip.
func BenchmarkParallelStreams(b *testing.B) {
	for _, par := range []int{1, 16, 128} {
		b.Run(fmt.Sprint("streams=", par), func(b *testing.B) {
			e := newEnv(b, Options{})
			streams := make(chan *ClientStream, par)
			for range par {
				streams <- e.dial(b, e.echo)
			}
			b.SetParallelism(max(1, par/2)) // GOMAXPROCS=2 here
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				s := <-streams
				buf := []byte{1}
				for pb.Next() {
					s.Write(buf)
					if _, err := io.ReadFull(s, buf); err != nil {
						b.Error(err)
						return
					}
				}
				streams <- s
			})
		})
	}
}
