package hbone

import "golang.org/x/net/http2"

// onData takes a DATA frame: flow control first (the whole frame counts,
// padding included), then the payload goes to the stream's buffer.
func (sc *h2Conn) onData(f *http2.DataFrame) error {
	n := int32(f.Length)
	sc.mu.Lock()
	defer sc.mu.Unlock()
	if n > sc.recvWindow {
		return http2.ConnectionError(http2.ErrCodeFlowControl)
	}
	sc.recvWindow -= n
	st := sc.streams[f.StreamID]
	if st == nil || st.recvEnded {
		// Nobody will read it: give the connection window back at once.
		sc.returnConnLocked(n)
		switch {
		case st != nil:
			return http2.StreamError{StreamID: f.StreamID, Code: http2.ErrCodeStreamClosed}
		case sc.idleStream(f.StreamID):
			return http2.ConnectionError(http2.ErrCodeProtocol)
		}
		return nil // in flight when the stream closed: ignored (RFC 9113 5.1)
	}
	if sc.client && !st.responded {
		sc.returnConnLocked(n)
		return http2.StreamError{StreamID: f.StreamID, Code: http2.ErrCodeProtocol} // DATA before the response
	}
	if n > st.recvWindow {
		sc.returnConnLocked(n)
		return http2.StreamError{StreamID: f.StreamID, Code: http2.ErrCodeFlowControl}
	}
	data := f.Data()
	st.recvWindow -= n
	if pad := n - int32(len(data)); pad > 0 {
		// Padding is never read: return it right away.
		st.recvUnacked += pad
		sc.returnConnLocked(pad)
	}
	if len(data) == 0 && !f.StreamEnded() {
		if err := sc.spendCheapLocked(); err != nil {
			return err
		}
	}
	if st.appClosed {
		sc.returnConnLocked(int32(len(data)))
	} else {
		st.buf.write(data)
	}
	if f.StreamEnded() {
		st.recvEnded = true
		if st.sendEnded {
			sc.closeStreamLocked(st, nil)
		}
	}
	st.cond.Broadcast()
	return nil
}

// consumedLocked accounts n bytes the application read from st and returns
// window to the peer once half of it is used up, so WINDOW_UPDATEs are
// batched instead of one per read.
func (sc *h2Conn) consumedLocked(st *stream, n int32) {
	st.recvUnacked += n
	if !st.recvEnded && !st.closed && st.recvUnacked >= sc.opts.StreamWindow/2 {
		sc.w.enqueue(ctlFrame{kind: http2.FrameWindowUpdate, stream: st.id, val: uint32(st.recvUnacked)})
		st.recvWindow += st.recvUnacked
		st.recvUnacked = 0
	}
	sc.returnConnLocked(n)
}

// returnConnLocked gives n bytes back to the connection-level window.
func (sc *h2Conn) returnConnLocked(n int32) {
	sc.recvUnacked += n
	if sc.recvUnacked >= sc.opts.ConnWindow/2 {
		sc.w.enqueue(ctlFrame{kind: http2.FrameWindowUpdate, val: uint32(sc.recvUnacked)})
		sc.recvWindow += sc.recvUnacked
		sc.recvUnacked = 0
	}
}
