package hbone

import (
	"crypto/tls"
	"net"
	"sync"
)

// maxRecord is TLS's largest record payload. Writes above it become several
// records, which crypto/tls hands to the socket one syscall each.
const maxRecord = 16 << 10

// batchBufSize bounds how many encrypted bytes are coalesced per syscall.
const batchBufSize = 256 << 10

var batchPool = sync.Pool{New: func() any { b := make([]byte, 0, batchBufSize); return &b }}

// batchConn sits under crypto/tls and, while corked, coalesces the records
// of one large TLS write into few socket writes: on loopback the per-syscall
// cost, not encryption, dominated bulk throughput. The buffer is borrowed
// from a pool only while corked, so idle connections hold none.
type batchConn struct {
	net.Conn
	mu     sync.Mutex
	corked int
	buf    *[]byte
}

func (c *batchConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.corked == 0 {
		return c.Conn.Write(p)
	}
	b := *c.buf
	if len(b)+len(p) > cap(b) {
		if err := c.flushLocked(); err != nil {
			return 0, err
		}
		b = *c.buf
		if len(p) > cap(b) {
			return c.Conn.Write(p)
		}
	}
	*c.buf = append(b, p...)
	return len(p), nil
}

func (c *batchConn) flushLocked() error {
	b := *c.buf
	if len(b) == 0 {
		return nil
	}
	_, err := c.Conn.Write(b)
	*c.buf = b[:0]
	return err
}

func (c *batchConn) cork() {
	c.mu.Lock()
	if c.corked == 0 {
		c.buf = batchPool.Get().(*[]byte)
	}
	c.corked++
	c.mu.Unlock()
}

func (c *batchConn) uncork() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.corked--
	if c.corked > 0 {
		return nil
	}
	err := c.flushLocked()
	*c.buf = (*c.buf)[:0]
	batchPool.Put(c.buf)
	c.buf = nil
	return err
}

// tlsConn is the connection HTTP/2 runs on: TLS over a batchConn.
type tlsConn struct {
	*tls.Conn
	raw *batchConn
}

func newTLSConn(raw net.Conn, client bool, conf *tls.Config) *tlsConn {
	b := &batchConn{Conn: raw}
	c := &tlsConn{raw: b}
	if client {
		c.Conn = tls.Client(b, conf)
	} else {
		c.Conn = tls.Server(b, conf)
	}
	return c
}

func (c *tlsConn) Write(p []byte) (int, error) {
	if len(p) <= maxRecord {
		return c.Conn.Write(p)
	}
	c.raw.cork()
	n, err := c.Conn.Write(p)
	if ferr := c.raw.uncork(); err == nil && ferr != nil {
		// Bytes were accepted by TLS but not delivered: the conn is broken.
		err = ferr
	}
	return n, err
}
