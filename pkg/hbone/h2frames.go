package hbone

import (
	"time"

	"golang.org/x/net/http2"
)

const maxWindow = 1<<31 - 1

// process handles one frame from the peer. DATA and HEADERS live in their
// own files; here are the connection-level frames.
func (sc *h2Conn) process(f http2.Frame) error {
	switch f := f.(type) {
	case *http2.DataFrame:
		return sc.onData(f)
	case *http2.MetaHeadersFrame:
		if sc.client {
			return sc.onResponse(f)
		}
		return sc.onHeaders(f)
	case *http2.SettingsFrame:
		return sc.onSettings(f)
	case *http2.PingFrame:
		return sc.onPing(f)
	case *http2.WindowUpdateFrame:
		return sc.onWindowUpdate(f)
	case *http2.RSTStreamFrame:
		return sc.onRSTStream(f)
	case *http2.GoAwayFrame:
		if sc.client {
			sc.onGoAway(f)
			return nil
		}
		// The client opens no more streams here: finish and close.
		go sc.goAway()
		return nil
	case *http2.PushPromiseFrame:
		// Clients cannot push, and our clients disable it (SETTINGS_ENABLE_PUSH 0).
		return http2.ConnectionError(http2.ErrCodeProtocol)
	default:
		// PRIORITY is advisory and unknown frame types must be ignored
		// (RFC 9113 5.3.2, 5.5), but neither is free to read.
		return sc.spendCheap()
	}
}

// spendCheap charges one frame that made us work for nothing.
func (sc *h2Conn) spendCheap() error {
	sc.mu.Lock()
	defer sc.mu.Unlock()
	return sc.spendCheapLocked()
}

func (sc *h2Conn) spendCheapLocked() error {
	if !sc.cheap.spend(time.Now()) {
		return http2.ConnectionError(http2.ErrCodeEnhanceYourCalm)
	}
	return nil
}

func (sc *h2Conn) onSettings(f *http2.SettingsFrame) error {
	if f.IsAck() {
		return nil // we send SETTINGS once and need nothing from its ack
	}
	sc.mu.Lock()
	err := sc.spendCheapLocked()
	if err == nil {
		err = f.ForeachSetting(sc.applySettingLocked)
	}
	sc.mu.Unlock()
	if err != nil {
		return err
	}
	sc.w.enqueue(ctlFrame{kind: http2.FrameSettings, ack: true})
	return nil
}

func (sc *h2Conn) applySettingLocked(s http2.Setting) error {
	if err := s.Valid(); err != nil {
		return err // a ConnectionError with the code RFC 9113 6.5.2 asks for
	}
	switch s.ID {
	case http2.SettingInitialWindowSize:
		// Applies to the send window of every open stream, which may go
		// negative (RFC 9113 6.9.2).
		delta := int64(s.Val) - int64(sc.peerWindow)
		sc.peerWindow = int32(s.Val)
		for _, st := range sc.streams {
			st.sendWindow += delta
			if st.sendWindow > maxWindow {
				return http2.ConnectionError(http2.ErrCodeFlowControl)
			}
			st.cond.Broadcast()
		}
	case http2.SettingMaxFrameSize:
		sc.peerFrame = s.Val
	case http2.SettingMaxConcurrentStreams:
		sc.peerStreams = s.Val
	case http2.SettingHeaderTableSize:
		sc.tableSize = int64(s.Val)
	}
	return nil
}

func (sc *h2Conn) onPing(f *http2.PingFrame) error {
	if f.IsAck() {
		sc.mu.Lock()
		defer sc.mu.Unlock()
		if f.Data != pingData || sc.pingWait == nil {
			return sc.spendCheapLocked() // unsolicited
		}
		sc.pingWait.Stop()
		sc.pingWait = nil
		return nil
	}
	if err := sc.spendCheap(); err != nil {
		return err
	}
	sc.w.enqueue(ctlFrame{kind: http2.FramePing, ack: true, ping: f.Data})
	return nil
}

func (sc *h2Conn) onWindowUpdate(f *http2.WindowUpdateFrame) error {
	sc.mu.Lock()
	defer sc.mu.Unlock()
	if !sc.windowUps.spend(time.Now()) {
		return http2.ConnectionError(http2.ErrCodeEnhanceYourCalm)
	}
	inc := int64(f.Increment)
	if f.StreamID == 0 {
		sc.sendWindow += inc
		if sc.sendWindow > maxWindow {
			return http2.ConnectionError(http2.ErrCodeFlowControl)
		}
		sc.connCond.Broadcast()
		return nil
	}
	st := sc.streams[f.StreamID]
	if st == nil {
		if sc.idleStream(f.StreamID) {
			return http2.ConnectionError(http2.ErrCodeProtocol)
		}
		return nil // a stream that already closed
	}
	st.sendWindow += inc
	if st.sendWindow > maxWindow {
		return http2.StreamError{StreamID: f.StreamID, Code: http2.ErrCodeFlowControl}
	}
	st.cond.Broadcast()
	return nil
}

// idleStream reports whether id names a stream the client has not opened
// (frames other than HEADERS on it are a connection error). Either end:
// only clients open streams here, with odd IDs.
func (sc *h2Conn) idleStream(id uint32) bool {
	return id%2 == 0 || id > sc.maxStreamID
}

func (sc *h2Conn) onRSTStream(f *http2.RSTStreamFrame) error {
	sc.stats.resetsReceived.Add(1)
	sc.mu.Lock()
	defer sc.mu.Unlock()
	st := sc.streams[f.StreamID]
	if st == nil {
		if sc.idleStream(f.StreamID) {
			return http2.ConnectionError(http2.ErrCodeProtocol)
		}
		return sc.spendCheapLocked()
	}
	if !sc.client && !st.responded && !sc.resets.spend(time.Now()) {
		return http2.ConnectionError(http2.ErrCodeEnhanceYourCalm)
	}
	sc.closeStreamLocked(st, streamResetError{Code: f.ErrCode})
	return nil
}

// resetStream sends RST_STREAM(code) and ends the stream, if open, for its
// application. A stream the client opened with headers we could not accept
// counts as opened.
func (sc *h2Conn) resetStream(id uint32, code http2.ErrCode) {
	sc.mu.Lock()
	if !sc.client && id%2 == 1 && id > sc.maxStreamID {
		sc.maxStreamID = id
	}
	if st := sc.streams[id]; st != nil {
		sc.resetLocked(st, code, http2.StreamError{StreamID: id, Code: code})
	} else {
		sc.w.enqueue(ctlFrame{kind: http2.FrameRSTStream, stream: id, code: code})
	}
	sc.mu.Unlock()
}
