package main

import (
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"io"
	"time"

	"github.com/xtaci/smux"
)

// The acceptor role of the command protocol: whoever accepted a stream reads the 16-byte header,
// does what the command says and closes. Used by `serve` for every stream a client opens and by
// `drive -scenario accept-echo` for streams the server opens.

// acceptorHandler performs one command on st. It must not close st: serveStream does that, so
// every path (success or error) ends with exactly one Close.
type acceptorHandler func(st *smux.Stream, c command) error

var acceptorHandlers = map[byte]acceptorHandler{
	cmdEcho:       acceptEcho,
	cmdExchange:   acceptExchange,
	cmdSink:       acceptSink,
	cmdFinReply:   acceptFinReply,
	cmdWriteClose: acceptWriteClose,
	cmdDiscard:    acceptDiscard,
}

// copyBufSize is the read buffer of the echo and discard loops: one maximal smux frame.
const copyBufSize = 64 << 10

// serveStream runs the acceptor side of one stream to completion and closes it. timeout (0 = none)
// bounds every read and write; serve runs without one because the opener decides how long a
// scenario takes, and a dead session unblocks everything anyway.
func serveStream(st *smux.Stream, timeout time.Duration) error {
	setStreamDeadline(st, timeout)
	c, err := readCommand(st)
	if err != nil {
		abortStream(st)
		return fmt.Errorf("stream %d: %w", st.ID(), err)
	}
	if handler, ok := acceptorHandlers[c.code]; ok {
		err = handler(st, c)
	} else {
		err = fmt.Errorf("unknown command %d", c.code)
	}
	if err != nil {
		abortStream(st) // drops unread input; the error below is what matters
		return fmt.Errorf("stream %d: %s acceptor: %w", st.ID(), c.name(), err)
	}
	if err := st.Close(); err != nil && !finRaceLost(err) {
		return fmt.Errorf("stream %d: %s acceptor: close: %w", st.ID(), c.name(), err)
	}
	return nil
}

// readCommand reads and decodes the 16-byte header the opener writes first.
func readCommand(r io.Reader) (command, error) {
	h := make([]byte, commandHeaderLen)
	if _, err := io.ReadFull(r, h); err != nil {
		return command{}, fmt.Errorf("read command header: %w", err)
	}
	return decodeCommand(h)
}

// acceptEcho copies every byte back until the opener's FIN.
func acceptEcho(st *smux.Stream, _ command) error {
	_, err := readToEOF(st, copyBufSize, func(chunk []byte, _ int64) error {
		_, werr := st.Write(chunk)
		return werr
	})
	return err
}

// acceptExchange writes B random bytes while reading B bytes, then sends SHA-256(received) and
// SHA-256(sent). The two directions must run concurrently: under v1 neither side reads while
// writing otherwise, and both would stall once the session buffers fill.
func acceptExchange(st *smux.Stream, c command) error {
	n := int64(c.b)
	sent, received := sha256.New(), sha256.New()
	errs := make(chan error, 2)
	go func() { errs <- writeRandom(st, n, maxChunk, sent) }()
	go func() { errs <- readRandomSized(st, n, copyBufSize, received) }()
	var first error
	for i := 0; i < 2; i++ {
		if err := <-errs; err != nil && first == nil {
			first = err
			// Unblock the other half (a v2 writer can wait for a window update for ever).
			abortStream(st)
		}
	}
	if first != nil {
		return first
	}
	_, err := st.Write(append(received.Sum(nil), sent.Sum(nil)...))
	return err
}

// acceptSink reads exactly B bytes with random read sizes and answers their SHA-256.
func acceptSink(st *smux.Stream, c command) error {
	h := sha256.New()
	if err := readRandomSized(st, int64(c.b), maxChunk, h); err != nil {
		return err
	}
	_, err := st.Write(h.Sum(nil))
	return err
}

// acceptFinReply reads until the opener half-closes, then answers SHA-256(received) and A bytes of
// the pattern. Only a TypeScript opener can half-close; Go 1.5.16 has no CloseWrite.
func acceptFinReply(st *smux.Stream, c command) error {
	h := sha256.New()
	if _, err := readToEOF(st, copyBufSize, func(chunk []byte, _ int64) error {
		h.Write(chunk)
		return nil
	}); err != nil {
		return err
	}
	if _, err := st.Write(h.Sum(nil)); err != nil {
		return err
	}
	return writePattern(st, int64(c.a))
}

// acceptWriteClose writes B bytes of the pattern; serveStream then closes at once, so the FIN
// follows the data immediately (the opener must still see every byte before EOF).
func acceptWriteClose(st *smux.Stream, c command) error {
	return writePattern(st, int64(c.b))
}

// acceptDiscard reads exactly B bytes without hashing (benchmarks) and answers the count.
func acceptDiscard(st *smux.Stream, c command) error {
	if err := discardN(st, int64(c.b)); err != nil {
		return err
	}
	reply := make([]byte, 8)
	binary.LittleEndian.PutUint64(reply, c.b)
	_, err := st.Write(reply)
	return err
}

// writePattern writes n bytes of the pattern i % 251 in writes of up to ~64 KiB.
func writePattern(w io.Writer, n int64) error {
	for sent := int64(0); sent < n; {
		chunk := patternBlock
		if rest := n - sent; int64(len(chunk)) > rest {
			chunk = chunk[:rest]
		}
		m, err := w.Write(chunk)
		sent += int64(m)
		if err != nil {
			return fmt.Errorf("write pattern after %d of %d bytes: %w", sent, n, err)
		}
	}
	return nil
}

// discardN reads and drops exactly n bytes using full-size reads (the benchmark path: no hashing,
// no random sizes).
func discardN(r io.Reader, n int64) error {
	buf := make([]byte, copyBufSize)
	for got := int64(0); got < n; {
		want := int64(len(buf))
		if rest := n - got; want > rest {
			want = rest
		}
		m, err := r.Read(buf[:want])
		got += int64(m)
		if err != nil && got < n {
			return fmt.Errorf("discard after %d of %d bytes: %w", got, n, err)
		}
	}
	return nil
}
