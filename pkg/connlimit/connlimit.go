// Package connlimit caps the connections a TCP listener holds open, the
// node agent's and the waypoint's one definition of a connection cap, and
// what one key (a source address, a peer identity) may hold of a shared
// resource (PerKey).
package connlimit

import (
	"net"
	"net/netip"
	"sync"
)

// Capped returns a listener that holds at most max of ln's connections open
// at once: Accept waits for a slot, so a storm waits in the kernel's accept
// queue instead of in memory. Its connections are *Conn, which keep
// every method of *net.TCPConn: the proxies half-close (CloseWrite) and
// reset (SetLinger) them. x/net/netutil.LimitListener hid those behind a
// plain net.Conn, which turned a server's FIN into nothing (clients that
// read to EOF hung) and an RST into a FIN.
func Capped(ln *net.TCPListener, max int) net.Listener {
	return CappedPerSource(ln, max, 0, nil)
}

// CappedPerSource is Capped, and also holds at most perSource connections
// from any one source address (0: no such limit). The accept queue is one
// for all sources, so a source at its limit cannot be made to wait: its
// next connection is reset as soon as it is accepted (shed, when set, is
// called), and the slot goes to whoever comes next. So one source cannot
// take every slot of a listener that many share.
func CappedPerSource(ln *net.TCPListener, max, perSource int, shed func()) net.Listener {
	return &cappedListener{TCPListener: ln, slots: make(chan struct{}, max), done: make(chan struct{}),
		perSource: NewPerKey[netip.Addr](perSource), shed: shed}
}

type cappedListener struct {
	*net.TCPListener
	slots     chan struct{}
	done      chan struct{}
	closeOnce sync.Once

	perSource *PerKey[netip.Addr]
	shed      func()
}

func (l *cappedListener) Accept() (net.Conn, error) {
	for {
		select {
		case l.slots <- struct{}{}:
		case <-l.done:
			return nil, net.ErrClosed
		}
		c, err := l.AcceptTCP()
		if err != nil {
			<-l.slots
			return nil, err
		}
		src := c.RemoteAddr().(*net.TCPAddr).AddrPort().Addr().Unmap()
		if l.perSource.Take(src) {
			return &Conn{TCPConn: c, l: l, src: src}, nil
		}
		_ = c.SetLinger(0) // a reset: the client sees at once it was refused
		c.Close()
		<-l.slots
		if l.shed != nil {
			l.shed()
		}
	}
}

// release frees a connection of src and its slot.
func (l *cappedListener) release(src netip.Addr) {
	l.perSource.Release(src)
	<-l.slots
}

func (l *cappedListener) Close() error {
	l.closeOnce.Do(func() { close(l.done) })
	return l.TCPListener.Close()
}

// Conn is a connection of a Capped listener; Close frees its slot.
type Conn struct {
	*net.TCPConn
	l    *cappedListener
	src  netip.Addr
	once sync.Once
}

func (c *Conn) Close() error {
	err := c.TCPConn.Close()
	c.once.Do(func() { c.l.release(c.src) })
	return err
}
