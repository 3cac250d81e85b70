package hbone

import (
	"net"
	"net/http"

	"golang.org/x/net/http2"
)

// connectHead is what a request's header block says.
type connectHead struct {
	method, authority string
	scheme, path      bool // present: not a plain CONNECT
	protocol          bool // :protocol, extended CONNECT, which we do not offer
	header            http.Header
}

// onHeaders opens a stream for a new request. Malformed requests are reset
// (PROTOCOL_ERROR, as x/net/http2's server does); well-formed ones we do
// not serve are answered with a status, like before: 405 for a method other
// than CONNECT, 400 for an :authority that is not host:port, 431 for a
// header list over Options.MaxHeaderListSize.
func (sc *h2Conn) onHeaders(f *http2.MetaHeadersFrame) error {
	id := f.StreamID
	sc.mu.Lock()
	if st := sc.streams[id]; st != nil {
		sc.mu.Unlock()
		return sc.onTrailers(st, f)
	}
	if id%2 == 0 || id <= sc.maxStreamID {
		sc.mu.Unlock()
		return http2.ConnectionError(http2.ErrCodeProtocol) // stream IDs only go up
	}
	sc.maxStreamID = id
	if sc.goingAway || len(sc.streams) >= int(sc.opts.MaxConcurrentStreams) {
		sc.mu.Unlock()
		return http2.StreamError{StreamID: id, Code: http2.ErrCodeRefusedStream}
	}
	h, status, reason := parseConnect(f)
	if status == 0 && reason != "" {
		sc.mu.Unlock()
		sc.log.Debug("hbone malformed request", "peer", sc.peer, "reason", reason)
		return http2.StreamError{StreamID: id, Code: http2.ErrCodeProtocol}
	}
	st := sc.newStreamLocked(id, f.StreamEnded())
	req := sc.newRequest(st, h)
	var err error
	if status != 0 {
		err = sc.startHandlerLocked(func() { sc.runRefusal(st, req, status, reason) })
	} else {
		err = sc.startHandlerLocked(func() { sc.runStream(st, req) })
	}
	sc.mu.Unlock()
	return err
}

// onTrailers takes a HEADERS frame on an open stream: trailers, which a
// CONNECT stream has no use for; with END_STREAM they end the client's
// direction, without it the stream is malformed.
func (sc *h2Conn) onTrailers(st *stream, f *http2.MetaHeadersFrame) error {
	if !f.StreamEnded() {
		return http2.StreamError{StreamID: st.id, Code: http2.ErrCodeProtocol}
	}
	sc.mu.Lock()
	defer sc.mu.Unlock()
	if st.recvEnded {
		return http2.StreamError{StreamID: st.id, Code: http2.ErrCodeStreamClosed}
	}
	st.recvEnded = true
	if st.sendEnded {
		sc.closeStreamLocked(st, nil)
	}
	st.cond.Broadcast()
	return nil
}

// connectionHeaders are HTTP/1 connection-specific fields, malformed in
// HTTP/2 (RFC 9113 8.2.2).
var connectionHeaders = map[string]bool{
	"connection": true, "keep-alive": true, "proxy-connection": true, "transfer-encoding": true, "upgrade": true,
}

// parseConnect reads f's fields. A non-empty reason with status 0 means
// malformed (reset the stream); a status means answer with it.
func parseConnect(f *http2.MetaHeadersFrame) (h connectHead, status int, reason string) {
	if f.Truncated {
		return h, http.StatusRequestHeaderFieldsTooLarge, "hbone: request header list too large"
	}
	h.header = make(http.Header, len(f.RegularFields()))
	for _, hf := range f.Fields {
		switch hf.Name {
		case ":method":
			h.method = hf.Value
		case ":authority":
			h.authority = hf.Value
		case ":scheme":
			h.scheme = true
		case ":path":
			h.path = true
		case ":protocol":
			h.protocol = true
		default:
			if hf.IsPseudo() {
				return h, 0, "unknown pseudo-header " + hf.Name // the Framer catches these; belt and braces
			}
			if connectionHeaders[hf.Name] || hf.Name == "te" && hf.Value != "trailers" {
				return h, 0, "connection-specific header " + hf.Name
			}
			h.header.Add(hf.Name, hf.Value) // canonicalises the name
		}
	}
	status, reason = checkConnect(h)
	return h, status, reason
}

// checkConnect is RFC 9113 8.5 (CONNECT: :method and :authority only) and
// HBONE's rule that :authority is the destination host:port.
func checkConnect(h connectHead) (int, string) {
	switch {
	case h.method == "":
		return 0, "no :method"
	case h.method != http.MethodConnect:
		if !h.scheme || !h.path {
			return 0, "request without :scheme or :path"
		}
		return http.StatusMethodNotAllowed, "hbone: only CONNECT is supported"
	case h.protocol || h.scheme || h.path:
		return 0, "CONNECT with :protocol, :scheme or :path"
	case h.authority == "":
		return 0, "CONNECT without :authority"
	}
	if _, _, err := net.SplitHostPort(h.authority); err != nil {
		return http.StatusBadRequest, "hbone: :authority must be the destination ip:port"
	}
	return 0, ""
}
