package main

import (
	"errors"
	"fmt"
	"hash"
	"io"
	"time"

	"github.com/xtaci/smux"
)

// Stream I/O helpers shared by both roles. They take io.Reader/io.Writer rather than *smux.Stream
// where they can, so the same code would drive any net.Conn.

// writeRandom writes n random bytes to w in chunks of random size 1..maxWrite, feeding each chunk
// to h (when not nil). Random sizes make Go split writes into frames at varying offsets.
func writeRandom(w io.Writer, n int64, maxWrite int, h hash.Hash) error {
	for sent := int64(0); sent < n; {
		size := randSize(maxWrite)
		if rest := n - sent; int64(size) > rest {
			size = int(rest)
		}
		chunk := randBytes(size)
		if h != nil {
			h.Write(chunk)
		}
		m, err := w.Write(chunk)
		sent += int64(m)
		if err != nil {
			return fmt.Errorf("write after %d of %d bytes: %w", sent, n, err)
		}
	}
	return nil
}

// readRandomSized reads exactly n bytes using Read calls of random size 1..maxRead, feeding h (when
// not nil). It deliberately avoids one big io.ReadFull: small reads split received frames, large
// ones span several, and both paths of the receiver must hand out the right bytes.
func readRandomSized(r io.Reader, n int64, maxRead int, h hash.Hash) error {
	buf := make([]byte, maxRead)
	for got := int64(0); got < n; {
		want := randSize(maxRead)
		if rest := n - got; int64(want) > rest {
			want = int(rest)
		}
		m, err := r.Read(buf[:want])
		// smux v2 may return data together with an error (the window update failed), so count
		// the data before looking at the error.
		if h != nil && m > 0 {
			h.Write(buf[:m])
		}
		got += int64(m)
		if err != nil && got < n {
			return fmt.Errorf("read after %d of %d bytes: %w", got, n, err)
		}
	}
	return nil
}

// readToEOF reads until io.EOF, passing each chunk and its stream offset to fn. It returns the
// byte count; io.EOF itself is the expected end and is not returned as an error.
func readToEOF(r io.Reader, bufSize int, fn func(chunk []byte, off int64) error) (int64, error) {
	buf := make([]byte, bufSize)
	var total int64
	for {
		m, err := r.Read(buf)
		if m > 0 {
			if ferr := fn(buf[:m], total); ferr != nil {
				return total + int64(m), ferr
			}
			total += int64(m)
		}
		if errors.Is(err, io.EOF) {
			return total, nil
		}
		if err != nil {
			return total, fmt.Errorf("read after %d bytes: %w", total, err)
		}
	}
}

// expectEOF checks that the peer sends nothing more and then closes: exactly what the acceptor's
// "then closes" promises after its reply.
func expectEOF(r io.Reader) error {
	extra, err := readToEOF(r, 4096, func([]byte, int64) error { return nil })
	if err != nil {
		return fmt.Errorf("waiting for EOF: %w", err)
	}
	if extra > 0 {
		return fmt.Errorf("%d unexpected bytes before EOF", extra)
	}
	return nil
}

// closeStream closes st but gives up after d. In 1.5.16 Close queues the FIN without any timeout,
// so it can block for ever while the session's send loop is stuck on a full socket; the goroutine
// left behind in that case is released when the session closes.
func closeStream(st *smux.Stream, d time.Duration) error {
	done := make(chan error, 1)
	go func() { done <- st.Close() }()
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case err := <-done:
		if err != nil && !finRaceLost(err) {
			return fmt.Errorf("close stream %d: %w", st.ID(), err)
		}
		return nil
	case <-timer.C:
		return fmt.Errorf("close stream %d: FIN not written within %v", st.ID(), d)
	}
}

// finRaceLost reports whether a Close error only means that the session died while the FIN was
// being written. That happens routinely at the very end of a scenario: the peer gets our last data,
// closes its whole session at once, and 1.5.16's Close, which waits on "FIN written" and "session
// dead" in one select, may pick the second even when the FIN went out (the peer often saw it: that
// is why it closed). The data exchange has been checked by then, so this is not a failure. A second
// Close on one stream would give the same error, but this program never closes a stream twice on a
// success path.
func finRaceLost(err error) bool {
	return errors.Is(err, io.ErrClosedPipe)
}

// abortStream closes st after a failure without waiting for the FIN. Close marks the stream dead
// first (which wakes its blocked readers and writers with io.ErrClosedPipe) and only then queues
// the FIN, which 1.5.16 writes without a timeout; running it in the background means a stuck send
// loop cannot hang the caller. Closing the session later releases that goroutine.
func abortStream(st *smux.Stream) {
	go st.Close()
}

// setStreamDeadline bounds every later Read and Write on st. Note that 1.5.16's v1 Write samples
// the write deadline once per call, and its v2 Write once per call too (newer versions re-read it).
func setStreamDeadline(st *smux.Stream, d time.Duration) {
	if d > 0 {
		_ = st.SetDeadline(time.Now().Add(d))
	}
}
