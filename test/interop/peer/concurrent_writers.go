package main

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/xtaci/smux"
)

// The `writers` sub-command: several goroutines Write() into ONE stream at once, as Go's smux allows. Under
// v2 each Write computes the window it may use before the other writers' frames count in the stream's
// numWritten, so together they send past the window the receiver granted (docs/NOTES.md, "A v2 peer past
// its window is cut off"). test/interop/concurrent-writers.spec.ts runs it against a TS server that pauses
// the stream, to see how far past its grant Go goes and whether our session ends it.
//
//	peer writers -addr H:P -v 2 [-writers N] [-chunk S] [-bytes T] [-timeout ms]
//	peer writers -self-pause ms -v 2 [...]     (Go's own acceptor, in process, as the reference)
//
// It dials, runs smux.Client, opens one stream and writes the 16-byte header WRITERS (command 7, A = N,
// B = T; not in README's table: only a TS acceptor speaks it). Then N goroutines, released together, each
// write their share of T (T / N, the first T % N writers one byte more) in Write calls of S bytes (the
// last one shorter). Writer i's byte at offset p of its share is i·k + writersMix(p) % k with k = 256 / N,
// so the receiver can tell every byte's writer apart and check each writer's bytes in order, however
// the writers' frames interleave. The acceptor reads T bytes, answers with the number of them that
// matched (uint64 LE, 8 bytes) and closes; we check it is T, see EOF and close. RESULT:
//
//	{"scenario":"writers","ok":…,"error":…,"version":2,"writers":N,"chunk":S,"bytes":T,"written":…,
//	 "writeErrors":…,"errConsumed":…,"acked":…,"ms":…}
//
// where error is the first writer's error, writeErrors the writers that failed and errConsumed those of them that
// failed with smux.ErrConsumed. Exit 0 on success, 1 otherwise (the TS session cut off, a short count, a timeout).
//
// Go 1.5.16's concurrent writers fail on their own, Go<->Go too (-self-pause: an in-process Go acceptor instead
// of -addr). A UPD wakes one blocked writer (chUpdate holds one signal), so writers blocked together can wait for
// ever with the window open (until -timeout); and a writer adds a frame to numWritten only after it was written,
// so a UPD can acknowledge more than was counted and another writer's Write fails with ErrConsumed.

// cmdWriters is the WRITERS command code of the header.
const cmdWriters byte = 7

// Only diagnostics use the name; protocol.go lists the commands of README's table.
func init() { commandNames[cmdWriters] = "WRITERS" }

// writersMix spreads a writer's offsets over the byte values, so that a dropped or repeated run of bytes
// breaks the sequence (a plain p % k would miss runs of a multiple of k). The acceptor computes
// the same: Math.imul(p, 0x9e3779b1) >>> 24.
func writersMix(p uint32) uint32 {
	return (p * 0x9e3779b1) >> 24
}

// writerShare is how many bytes writer i of n writes out of total.
func writerShare(total int64, n, i int) int64 {
	share := total / int64(n)
	if int64(i) < total%int64(n) {
		share++
	}
	return share
}

// writerPayload is writer i's whole share: byte p is i·k + writersMix(p) % k, k = 256 / n.
func writerPayload(share int64, n, i int) []byte {
	k := uint32(256 / n)
	b := make([]byte, share)
	for p := range b {
		b[p] = byte(uint32(i)*k + writersMix(uint32(p))%k)
	}
	return b
}

func cmdConcurrentWriters(args []string) int {
	fs, common := newFlagSet("writers")
	addr := fs.String("addr", "", "server address host:port (required)")
	writers := fs.Int("writers", 4, "goroutines writing the one stream at once (1..256)")
	chunk := fs.Int("chunk", 32<<10, "bytes per Write call")
	total := fs.Int64("bytes", 4<<20, "bytes in all, shared between the writers (at least one per writer)")
	selfPause := fs.Int("self-pause", 0, "without -addr: write to an in-process Go server that leaves the stream unread this many ms (Go<->Go reference)")
	if err := parseFlags(fs, args); err != nil {
		return 2
	}
	if *addr == "" && *selfPause > 0 {
		cfg, err := common.smuxConfig()
		if err != nil {
			log.Printf("writers: %v", err)
			return 2
		}
		a, err := serveWritersSelf(cfg, time.Duration(*selfPause)*time.Millisecond)
		if err != nil {
			log.Printf("writers: %v", err)
			return 1
		}
		*addr = a
	}
	if *addr == "" || *writers < 1 || *writers > 256 || *chunk < 1 || *total < int64(*writers) || *total >= 1<<53 {
		log.Printf("writers: need -addr, 1 <= -writers <= 256, -chunk >= 1, -writers <= -bytes < 2^53")
		return 2
	}
	cfg, err := common.smuxConfig()
	if err != nil {
		log.Printf("writers: %v", err)
		return 2
	}
	timeout := common.timeout(20 * time.Second)
	startWatchdog(timeout+watchdogSlack, "writers", func(r *result) { r.set("version", cfg.Version) })
	r := newResult("writers").set("version", cfg.Version).set("writers", *writers).set("chunk", *chunk).set("bytes", *total)
	start := time.Now()
	err = runWriters(*addr, cfg, *writers, *chunk, *total, timeout, r)
	r.set("ms", msSince(start))
	finish(r.done(err))
	return 0 // not reached: finish exits
}

// runWriters dials, runs the writers on one stream, checks the acceptor's count and closes the session.
func runWriters(addr string, cfg *smux.Config, n, chunk int, total int64, timeout time.Duration, r *result) error {
	conn, err := net.DialTimeout("tcp", addr, timeout)
	if err != nil {
		return fmt.Errorf("dial %s: %w", addr, err)
	}
	sess, err := smux.Client(conn, cfg)
	if err != nil {
		conn.Close()
		return fmt.Errorf("smux.Client: %w", err)
	}
	// Closing the session closes the connection and wakes any goroutine still blocked in smux.
	defer sess.Close()
	c := command{code: cmdWriters, a: uint32(n), b: uint64(total)}
	st, err := openCommand(sess, c, timeout)
	if err != nil {
		return err
	}

	payloads := make([][]byte, n)
	for i := range payloads {
		payloads[i] = writerPayload(writerShare(total, n, i), n, i)
	}
	// The acceptor's count is read while the writers run. A 1.5.16 writer waiting for a window wakes on a UPD, its
	// deadline or Close, not when the connection fails: a failed read closes the session to release the writers.
	type answer struct {
		reply []byte
		err   error
	}
	answered := make(chan answer, 1)
	go func() {
		reply := make([]byte, 8)
		_, err := io.ReadFull(st, reply)
		if err != nil {
			sess.Close()
		}
		answered <- answer{reply, err}
	}()

	var written, failed, consumed int64
	var firstMu sync.Mutex
	var firstErr error
	var wg sync.WaitGroup
	release := make(chan struct{})
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func(b []byte) {
			defer wg.Done()
			<-release // all at once: the window race is the point
			for off := 0; off < len(b); {
				end := off + chunk
				if end > len(b) {
					end = len(b)
				}
				m, err := st.Write(b[off:end])
				atomic.AddInt64(&written, int64(m))
				if err != nil {
					atomic.AddInt64(&failed, 1)
					if errors.Is(err, smux.ErrConsumed) {
						atomic.AddInt64(&consumed, 1)
					}
					firstMu.Lock()
					if firstErr == nil {
						firstErr = fmt.Errorf("write at %d of %d bytes: %w", off, len(b), err)
					}
					firstMu.Unlock()
					return
				}
				off = end
			}
		}(payloads[i])
	}
	close(release)
	wg.Wait()
	r.set("written", atomic.LoadInt64(&written)).set("writeErrors", atomic.LoadInt64(&failed)).set("errConsumed", atomic.LoadInt64(&consumed))
	if firstErr != nil {
		abortStream(st)
		return fmt.Errorf("stream %d: %d of %d writers failed, %d of %d bytes written; first: %w",
			st.ID(), failed, n, written, total, firstErr)
	}

	a := <-answered
	if a.err != nil {
		abortStream(st)
		return fmt.Errorf("stream %d: read the acceptor's count: %w", st.ID(), a.err)
	}
	acked := int64(binary.LittleEndian.Uint64(a.reply))
	r.set("acked", acked)
	if acked != total {
		err = fmt.Errorf("the acceptor found %d of %d bytes in order", acked, total)
	} else {
		err = expectEOF(st)
	}
	if err != nil {
		abortStream(st)
		return fmt.Errorf("stream %d: %w", st.ID(), err)
	}
	return closeStream(st, timeout)
}

// serveWritersSelf starts the Go acceptor of WRITERS on 127.0.0.1:0 (one session, one stream): it leaves the stream
// unread for pause, then reads and checks every writer's bytes, answers the count and closes, as the TS acceptor of
// concurrent-writers.spec.ts does. Go's own receiver, for comparison.
func serveWritersSelf(cfg *smux.Config, pause time.Duration) (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	go func() {
		conn, err := ln.Accept()
		ln.Close()
		if err != nil {
			return
		}
		sess, err := smux.Server(conn, cfg)
		if err != nil {
			return
		}
		st, err := sess.AcceptStream()
		if err != nil {
			return
		}
		time.Sleep(pause)
		h := make([]byte, commandHeaderLen)
		if _, err := io.ReadFull(st, h); err != nil {
			return
		}
		c, err := decodeCommand(h)
		if err != nil || c.code != cmdWriters || c.a < 1 || c.a > 256 {
			log.Printf("writers -self-pause: bad header % x", h)
			st.Close()
			return
		}
		n, total := int(c.a), int64(c.b)
		k := uint32(256 / n)
		next := make([]uint32, n)
		matched := int64(-1) // the offset of the first byte out of its writer's order
		got, err := readExactly(st, total, func(b []byte, off int64) {
			for j, v := range b {
				w := int(uint32(v) / k)
				if matched < 0 && (w >= n || uint32(v) != uint32(w)*k+writersMix(next[w])%k) {
					matched = off + int64(j)
				}
				if w < n {
					next[w]++
				}
			}
		})
		if err != nil {
			log.Printf("writers -self-pause: read %d of %d bytes: %v", got, total, err)
			st.Close()
			return
		}
		if matched < 0 {
			matched = total
		}
		reply := make([]byte, 8)
		binary.LittleEndian.PutUint64(reply, uint64(matched))
		st.Write(reply)
		st.Close()
	}()
	return ln.Addr().String(), nil
}

// readExactly reads n bytes from r, passing each chunk and its offset to fn.
func readExactly(r io.Reader, n int64, fn func(chunk []byte, off int64)) (int64, error) {
	buf := make([]byte, copyBufSize)
	var got int64
	for got < n {
		want := int64(len(buf))
		if rest := n - got; rest < want {
			want = rest
		}
		m, err := r.Read(buf[:want])
		if m > 0 {
			fn(buf[:m], got)
			got += int64(m)
		}
		if err != nil && got < n {
			return got, err
		}
	}
	return got, nil
}
