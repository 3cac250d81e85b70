package hbone

import (
	"errors"
	"fmt"
	"net/http"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// newRequest is the Request the handler sees for stream st.
func (sc *h2Conn) newRequest(st *stream, h connectHead) *Request {
	return &Request{
		Peer:        sc.peer,
		Authority:   h.authority,
		Forwarded:   h.header.Get("Forwarded"),
		Baggage:     h.header.Get("Baggage"),
		Traceparent: h.header.Get("Traceparent"),
		Header:      h.header,
		RemoteAddr:  sc.raw.RemoteAddr(),
		LocalAddr:   sc.raw.LocalAddr(),
		s:           st,
	}
}

// runStream runs the handler for st and ends the stream after it: a
// refusal if it did not accept, else END_STREAM if the handler did not
// send it (see Server.Handler).
func (sc *h2Conn) runStream(st *stream, req *Request) {
	err := sc.srv.callHandler(st, req)
	req.mu.Lock()
	accepted := req.st != nil
	req.ended = true // a late Accept fails instead of answering twice
	req.mu.Unlock()
	if !accepted {
		sc.refuse(st, req, err)
	} else {
		_, _ = st.write(nil, true) // no-op if already ended or reset
	}
	sc.finishStream(st)
}

// callHandler runs the user handler; a panic resets an accepted stream and
// refuses an unaccepted one with 500.
func (s *Server) callHandler(st *stream, req *Request) (err error) {
	defer func() {
		if p := recover(); p != nil {
			s.Logger.Error("hbone handler panicked", "authority", req.Authority, "panic", p)
			req.mu.Lock()
			if req.st != nil {
				st.close(http2.ErrCodeCancel, errHandlerDone)
			}
			req.mu.Unlock()
			err = Refuse(http.StatusInternalServerError, "handler panicked")
		}
	}()
	return s.Handler(st.ctx, req)
}

// refuse answers a stream the handler did not accept: with the status of
// its RefusedError, else 503 with the handler's error (if any) as reason.
func (sc *h2Conn) refuse(st *stream, req *Request, err error) {
	var re *RefusedError
	if !errors.As(err, &re) {
		re = &RefusedError{Status: http.StatusServiceUnavailable, Reason: "handler returned without accepting"}
		if err != nil {
			re.Reason = err.Error()
		}
	}
	sc.log.Debug("hbone stream refused", "peer", req.Peer, "authority", req.Authority, "status", re.Status, "reason", re.Reason)
	sc.respondError(st, re.Status, re.Reason, nil)
}

// runRefusal answers a request that never reaches the handler.
func (sc *h2Conn) runRefusal(st *stream, req *Request, status int, reason string) {
	var extra []hpack.HeaderField
	if status == http.StatusMethodNotAllowed {
		extra = append(extra, hpack.HeaderField{Name: "allow", Value: http.MethodConnect})
	}
	sc.log.Debug("hbone request refused", "peer", req.Peer, "authority", req.Authority, "status", status, "reason", reason)
	sc.respondError(st, status, reason, extra)
	sc.finishStream(st)
}

// respondError answers status with reason as a text body, the way
// http.Error does; the client reads reason into its RefusedError.
func (sc *h2Conn) respondError(st *stream, status int, reason string, extra []hpack.HeaderField) {
	body := reason + "\n"
	fields := append([]hpack.HeaderField{
		{Name: "content-type", Value: "text/plain; charset=utf-8"},
		{Name: "x-content-type-options", Value: "nosniff"},
		{Name: "content-length", Value: fmt.Sprint(len(body))},
	}, extra...)
	if st.writeHeaders(status, fields, false) == nil {
		_, _ = st.write([]byte(body), true)
	}
}

// finishStream runs when the handler (or a refusal) is done with st: a
// client still sending is told to stop with RST_STREAM(NO_ERROR) after our
// complete response (RFC 9113 8.1), a stream we could not end is reset.
func (sc *h2Conn) finishStream(st *stream) {
	sc.mu.Lock()
	st.handlerDone = true
	if !st.closed {
		code := http2.ErrCodeCancel
		if st.sendEnded {
			code = http2.ErrCodeNo
		}
		sc.resetLocked(st, code, errHandlerDone)
	}
	st.appClosed = true
	st.stopReadTimerLocked()
	sc.returnConnLocked(int32(st.buf.discard()))
	st.cancel()
	st.cond.Broadcast()
	sc.handlerEndedLocked()
	sc.mu.Unlock()
	sc.w.kick()
}
