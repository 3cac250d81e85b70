// Package connlimit caps the connections a TCP listener holds open, the
// node agent's and the waypoint's one definition of a connection cap.
package connlimit

import (
	"net"
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
	return &cappedListener{TCPListener: ln, slots: make(chan struct{}, max), done: make(chan struct{})}
}

type cappedListener struct {
	*net.TCPListener
	slots     chan struct{}
	done      chan struct{}
	closeOnce sync.Once
}

func (l *cappedListener) Accept() (net.Conn, error) {
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
	return &Conn{TCPConn: c, slots: l.slots}, nil
}

func (l *cappedListener) Close() error {
	l.closeOnce.Do(func() { close(l.done) })
	return l.TCPListener.Close()
}

// Conn is a connection of a Capped listener; Close frees its slot.
type Conn struct {
	*net.TCPConn
	slots chan struct{}
	once  sync.Once
}

func (c *Conn) Close() error {
	err := c.TCPConn.Close()
	c.once.Do(func() { <-c.slots })
	return err
}
