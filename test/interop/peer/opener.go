package main

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"io"
	"time"

	"github.com/xtaci/smux"
)

// The opener role of the command protocol: open a stream, write the 16-byte header first, then do
// the opener's half of the command and check what comes back. Used by drive scenarios, by
// serve -open-echo and by bench-rr. Every function closes the stream it opened.

// maxEchoMessage is the largest echo message; lengths are drawn from 1..maxEchoMessage so that
// consecutive messages land at varying offsets inside frames.
const maxEchoMessage = 200

// openCommand opens a stream, bounds it by timeout and writes the command header. The opener always
// writes first, so the acceptor never sends before our stream is registered (Go's OpenStream race).
func openCommand(sess *smux.Session, c command, timeout time.Duration) (*smux.Stream, error) {
	st, err := openStream(sess, timeout)
	if err != nil {
		return nil, fmt.Errorf("open stream for %s: %w", c.name(), err)
	}
	setStreamDeadline(st, timeout)
	if _, err := st.Write(c.encode()); err != nil {
		abortStream(st)
		return nil, fmt.Errorf("stream %d: write %s header: %w", st.ID(), c.name(), err)
	}
	return st, nil
}

// openStream is sess.OpenStream bounded by timeout (0 = unbounded). 1.5.16 queues the SYN without
// any timeout, so OpenStream blocks for as long as the session's send loop is stuck on a full
// socket. If it gives up, a stream that opens later is closed again in the background.
func openStream(sess *smux.Session, timeout time.Duration) (*smux.Stream, error) {
	if timeout <= 0 {
		return sess.OpenStream()
	}
	type opened struct {
		st  *smux.Stream
		err error
	}
	// Unbuffered on purpose: once we stop listening, the opener goroutine sees `abandoned` instead
	// and closes the stream nobody will use.
	done := make(chan opened)
	abandoned := make(chan struct{})
	go func() {
		st, err := sess.OpenStream()
		select {
		case done <- opened{st, err}:
		case <-abandoned:
			if err == nil {
				st.Close()
			}
		}
	}()
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	select {
	case o := <-done:
		return o.st, o.err
	case <-timer.C:
		close(abandoned)
		return nil, fmt.Errorf("SYN not written within %v", timeout)
	}
}

// withStream wraps an error from the opener half with the stream id and closes the stream; on
// success it closes the stream (bounded) and returns the close error.
func withStream(st *smux.Stream, c command, timeout time.Duration, err error) error {
	if err != nil {
		abortStream(st)
		return fmt.Errorf("stream %d: %s opener: %w", st.ID(), c.name(), err)
	}
	return closeStream(st, timeout)
}

// echoRoundTrips writes messages of random length and reads each one back before the next.
func echoRoundTrips(rw io.ReadWriter, rounds int) error {
	back := make([]byte, maxEchoMessage)
	for i := 0; i < rounds; i++ {
		msg := randBytes(randSize(maxEchoMessage))
		if _, err := rw.Write(msg); err != nil {
			return fmt.Errorf("round %d: write %d bytes: %w", i, len(msg), err)
		}
		if _, err := io.ReadFull(rw, back[:len(msg)]); err != nil {
			return fmt.Errorf("round %d: read back %d bytes: %w", i, len(msg), err)
		}
		if !bytes.Equal(msg, back[:len(msg)]) {
			return fmt.Errorf("round %d: echoed %d bytes differ from what was sent", i, len(msg))
		}
	}
	return nil
}

// runEchoOpener opens an ECHO stream, does `rounds` round trips and closes.
func runEchoOpener(sess *smux.Session, rounds int, timeout time.Duration) error {
	c := command{code: cmdEcho}
	st, err := openCommand(sess, c, timeout)
	if err != nil {
		return err
	}
	return withStream(st, c, timeout, echoRoundTrips(st, rounds))
}

// runExchangeOpener writes n random bytes while reading n + 64 bytes, then checks the acceptor's
// two digests against our own and that the acceptor closes.
func runExchangeOpener(sess *smux.Session, n int64, timeout time.Duration) error {
	c := command{code: cmdExchange, b: uint64(n)}
	st, err := openCommand(sess, c, timeout)
	if err != nil {
		return err
	}
	sent, received := sha256.New(), sha256.New()
	digests := make([]byte, 2*sha256.Size)
	errs := make(chan error, 2)
	go func() { errs <- writeRandom(st, n, maxChunk, sent) }()
	go func() {
		err := readRandomSized(st, n, copyBufSize, received)
		if err == nil {
			_, err = io.ReadFull(st, digests)
		}
		if err == nil {
			err = expectEOF(st)
		}
		errs <- err
	}()
	var first error
	for i := 0; i < 2; i++ {
		if err := <-errs; err != nil && first == nil {
			first = err
			abortStream(st) // unblock the other half
		}
	}
	if first == nil {
		first = compareDigests(digests, sent.Sum(nil), received.Sum(nil))
	}
	return withStream(st, c, timeout, first)
}

// compareDigests checks the EXCHANGE reply: the acceptor's SHA-256(received) must equal ours of
// what we sent, and its SHA-256(sent) ours of what we received.
func compareDigests(reply, ourSent, ourReceived []byte) error {
	if !bytes.Equal(reply[:sha256.Size], ourSent) {
		return fmt.Errorf("acceptor received different bytes than we sent (digest %x, ours %x)", reply[:sha256.Size], ourSent)
	}
	if !bytes.Equal(reply[sha256.Size:], ourReceived) {
		return fmt.Errorf("we received different bytes than the acceptor sent (digest %x, ours %x)", reply[sha256.Size:], ourReceived)
	}
	return nil
}

// runSinkOpener writes n random bytes in random write sizes, then compares the acceptor's digest.
func runSinkOpener(sess *smux.Session, n int64, timeout time.Duration) error {
	c := command{code: cmdSink, b: uint64(n)}
	st, err := openCommand(sess, c, timeout)
	if err != nil {
		return err
	}
	return withStream(st, c, timeout, func() error {
		h := sha256.New()
		if err := writeRandom(st, n, maxChunk, h); err != nil {
			return err
		}
		reply := make([]byte, sha256.Size)
		if _, err := io.ReadFull(st, reply); err != nil {
			return fmt.Errorf("read digest: %w", err)
		}
		if ours := h.Sum(nil); !bytes.Equal(reply, ours) {
			return fmt.Errorf("acceptor's digest %x differs from ours %x", reply, ours)
		}
		return expectEOF(st)
	}())
}

// runWriteCloseOpener reads until EOF and checks that exactly n bytes of the pattern arrived.
func runWriteCloseOpener(sess *smux.Session, n int64, timeout time.Duration) error {
	c := command{code: cmdWriteClose, b: uint64(n)}
	st, err := openCommand(sess, c, timeout)
	if err != nil {
		return err
	}
	total, err := readToEOF(st, copyBufSize, func(chunk []byte, off int64) error {
		if i := checkPattern(chunk, off); i >= 0 {
			return fmt.Errorf("byte %d is %d, want %d", off+int64(i), chunk[i], patternByte(off+int64(i)))
		}
		return nil
	})
	if err == nil && total != n {
		err = fmt.Errorf("got %d bytes before EOF, want %d", total, n)
	}
	return withStream(st, c, timeout, err)
}
