package kubelet

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"time"
)

// CRI log format, as written by real runtimes and read by real kubelets:
//
//	2024-01-02T03:04:05.123456789Z stdout F the line
//
// "F" is a full line, "P" a partial one (a line longer than the buffer, or
// the last bytes before EOF without a newline).
const criTimeFormat = "2006-01-02T15:04:05.000000000Z07:00"

// maxCRILine bounds one record; longer lines are split into P records.
const maxCRILine = 16 * 1024

type criLogWriter struct {
	mu sync.Mutex
	f  *os.File
}

func openCRILog(path string) (*criLogWriter, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o640)
	if err != nil {
		return nil, err
	}
	return &criLogWriter{f: f}, nil
}

func (w *criLogWriter) Close() error { return w.f.Close() }

func (w *criLogWriter) write(ts time.Time, stream string, partial bool, line []byte) {
	w.mu.Lock()
	defer w.mu.Unlock()
	_, _ = w.f.Write(formatCRILine(ts, stream, partial, line))
}

// formatCRILine renders one record; line must not contain the newline.
func formatCRILine(ts time.Time, stream string, partial bool, line []byte) []byte {
	tag := "F"
	if partial {
		tag = "P"
	}
	var b bytes.Buffer
	b.Grow(len(line) + 48)
	b.WriteString(ts.UTC().Format(criTimeFormat))
	b.WriteByte(' ')
	b.WriteString(stream)
	b.WriteByte(' ')
	b.WriteString(tag)
	b.WriteByte(' ')
	b.Write(line)
	b.WriteByte('\n')
	return b.Bytes()
}

// pumpCRILog copies r into w line by line until EOF.
func pumpCRILog(r io.Reader, stream string, w *criLogWriter) {
	br := bufio.NewReaderSize(r, maxCRILine)
	for {
		line, err := br.ReadSlice('\n')
		if len(line) > 0 {
			if line[len(line)-1] == '\n' {
				w.write(time.Now(), stream, false, line[:len(line)-1])
			} else {
				w.write(time.Now(), stream, true, line)
			}
		}
		if err != nil && !errors.Is(err, bufio.ErrBufferFull) {
			return
		}
	}
}

// criLine is a parsed record.
type criLine struct {
	ts      time.Time
	stream  string
	partial bool
	content []byte // without trailing newline
}

func parseCRILine(l []byte) (criLine, error) {
	l = bytes.TrimSuffix(l, []byte("\n"))
	var c criLine
	i := bytes.IndexByte(l, ' ')
	if i < 0 {
		return c, fmt.Errorf("malformed CRI log line %q", l)
	}
	ts, err := time.Parse(time.RFC3339Nano, string(l[:i]))
	if err != nil {
		return c, fmt.Errorf("malformed CRI timestamp: %w", err)
	}
	c.ts = ts
	rest := l[i+1:]
	j := bytes.IndexByte(rest, ' ')
	if j < 0 {
		return c, fmt.Errorf("malformed CRI log line %q", l)
	}
	c.stream = string(rest[:j])
	rest = rest[j+1:]
	k := bytes.IndexByte(rest, ' ')
	if k < 0 {
		// "ts stream F" with an empty line.
		c.partial = string(rest) == "P"
		return c, nil
	}
	c.partial = string(rest[:k]) == "P"
	c.content = rest[k+1:]
	return c, nil
}

// LogOptions mirror the kubelet's containerLogs query parameters.
type LogOptions struct {
	Follow     bool
	TailLines  *int64
	LimitBytes *int64
	Timestamps bool
	SinceTime  *time.Time
}

// writeLogs renders the CRI log file at path to out. With Follow it keeps
// polling for new data until stillWriting reports false (the container
// stopped) and the file is drained, or done is closed.
func writeLogs(path string, opts LogOptions, out io.Writer, stillWriting func() bool, done <-chan struct{}) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	if opts.TailLines != nil {
		if err := seekTail(f, *opts.TailLines); err != nil {
			return err
		}
	}
	var written int64
	limitHit := func() bool { return opts.LimitBytes != nil && written >= *opts.LimitBytes }
	emit := func(c criLine) error {
		if opts.SinceTime != nil && c.ts.Before(*opts.SinceTime) {
			return nil
		}
		var b []byte
		if opts.Timestamps {
			b = append(b, c.ts.UTC().Format(time.RFC3339Nano)...)
			b = append(b, ' ')
		}
		b = append(b, c.content...)
		if !c.partial {
			b = append(b, '\n')
		}
		if opts.LimitBytes != nil && written+int64(len(b)) > *opts.LimitBytes {
			b = b[:*opts.LimitBytes-written]
		}
		n, err := out.Write(b)
		written += int64(n)
		if fl, ok := out.(interface{ Flush() }); ok {
			fl.Flush()
		}
		return err
	}
	br := bufio.NewReader(f)
	var pending []byte
	for {
		chunk, err := br.ReadBytes('\n')
		pending = append(pending, chunk...)
		if err == nil {
			if c, perr := parseCRILine(pending); perr == nil {
				if werr := emit(c); werr != nil {
					return werr
				}
			}
			pending = pending[:0]
			if limitHit() {
				return nil
			}
			continue
		}
		if !errors.Is(err, io.EOF) {
			return err
		}
		if !opts.Follow {
			return nil
		}
		// Check liveness before sleeping: a stopped container whose file
		// is drained is done.
		if stillWriting == nil || !stillWriting() {
			// One more read to catch the final bytes.
			rest, _ := io.ReadAll(br)
			pending = append(pending, rest...)
			for _, l := range bytes.SplitAfter(pending, []byte("\n")) {
				if len(l) == 0 {
					continue
				}
				if c, perr := parseCRILine(l); perr == nil {
					if werr := emit(c); werr != nil || limitHit() {
						return werr
					}
				}
			}
			return nil
		}
		select {
		case <-done:
			return nil
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// seekTail positions f so that the last n lines remain to be read.
func seekTail(f *os.File, n int64) error {
	if n < 0 {
		return nil
	}
	if n == 0 {
		_, err := f.Seek(0, io.SeekEnd)
		return err
	}
	st, err := f.Stat()
	if err != nil {
		return err
	}
	size := st.Size()
	const block = 64 * 1024
	var lines int64
	pos := size
	buf := make([]byte, block)
	// Ignore the newline that ends the file.
	skipLast := true
	for pos > 0 {
		sz := int64(block)
		if pos < sz {
			sz = pos
		}
		pos -= sz
		if _, err := f.ReadAt(buf[:sz], pos); err != nil && !errors.Is(err, io.EOF) {
			return err
		}
		for i := sz - 1; i >= 0; i-- {
			if buf[i] != '\n' {
				continue
			}
			if skipLast && pos+i == size-1 {
				continue
			}
			lines++
			if lines == n {
				_, err := f.Seek(pos+i+1, io.SeekStart)
				return err
			}
		}
		skipLast = false
	}
	_, err = f.Seek(0, io.SeekStart)
	return err
}
