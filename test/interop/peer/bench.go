package main

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"log"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/xtaci/smux"
)

// Go↔Go baselines for bench/: the same workloads the TypeScript benchmarks run, measured with the
// real Go smux on both ends over loopback TCP, so TS figures can be read relative to Go's.

const benchIOSize = 64 << 10 // bench-bulk write and read size

func cmdBenchBulk(args []string) int {
	fs, common := newFlagSet("bench-bulk")
	nbytes := fs.Int64("bytes", 256<<20, "bytes per round")
	rounds := fs.Int("rounds", 3, "number of rounds (one stream each, same session)")
	addr := fs.String("addr", "", "external server speaking the command protocol (DISCARD); default: an in-process Go server")
	if err := parseFlags(fs, args); err != nil {
		return 2
	}
	cfg, err := common.smuxConfig()
	if err != nil {
		log.Printf("bench-bulk: %v", err)
		return 2
	}
	startWatchdog(common.timeout(10*time.Minute), "bench-bulk", nil)
	var client, server *smux.Session
	if *addr != "" {
		// Separate processes, as the other systems are measured: the server is `peer serve` (or ours).
		conn, err := net.Dial("tcp", *addr)
		if err == nil {
			client, err = smux.Client(conn, cfg)
		}
		if err != nil {
			finish(newResult("bench-bulk").done(err))
		}
	} else if client, server, err = loopbackPair(cfg); err != nil {
		finish(newResult("bench-bulk").done(err))
	}
	for i := 1; i <= *rounds; i++ {
		var d time.Duration
		var err error
		if server != nil {
			d, err = bulkRound(client, server, *nbytes)
		} else {
			d, err = discardRound(client, *nbytes)
		}
		r := newResult("bench-bulk").done(err).set("version", cfg.Version).set("round", i).
			set("bytes", *nbytes).set("ms", float64(d.Microseconds()/100)/10).set("mbps", mbps(*nbytes, d))
		if err != nil {
			finish(r)
		}
		printLine(r.String())
	}
	client.Close()
	if server != nil {
		server.Close()
	}
	return 0
}

// writeN writes n bytes of random data in benchIOSize writes.
func writeN(st io.Writer, n int64) error {
	chunk := randBytes(benchIOSize)
	for sent := int64(0); sent < n; {
		m := int64(len(chunk))
		if rest := n - sent; m > rest {
			m = rest
		}
		if _, err := st.Write(chunk[:m]); err != nil {
			return fmt.Errorf("write after %d bytes: %w", sent, err)
		}
		sent += m
	}
	return nil
}

// discardRound sends n bytes to an external acceptor with the DISCARD command and returns the time from
// opening the stream until the acceptor's byte count (sent once it has read them all) arrives.
func discardRound(client *smux.Session, n int64) (time.Duration, error) {
	start := time.Now()
	st, err := client.OpenStream()
	if err != nil {
		return 0, err
	}
	defer st.Close()
	if _, err := st.Write(command{code: cmdDiscard, b: uint64(n)}.encode()); err != nil {
		return 0, err
	}
	if err := writeN(st, n); err != nil {
		return 0, err
	}
	count := make([]byte, 8)
	if _, err := io.ReadFull(st, count); err != nil {
		return 0, fmt.Errorf("reading the count: %w", err)
	}
	if got := int64(binary.LittleEndian.Uint64(count)); got != n {
		return 0, fmt.Errorf("acceptor counted %d of %d bytes", got, n)
	}
	return time.Since(start), nil
}

// loopbackPair connects a Go client session to a Go server session over real TCP on 127.0.0.1.
func loopbackPair(cfg *smux.Config) (client, server *smux.Session, err error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, nil, err
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		conn, err := ln.Accept()
		if err != nil {
			log.Printf("loopback accept: %v", err)
		}
		accepted <- conn
	}()
	cconn, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		return nil, nil, err
	}
	sconn := <-accepted
	if sconn == nil {
		return nil, nil, fmt.Errorf("loopback accept failed")
	}
	if client, err = smux.Client(cconn, cfg); err != nil {
		return nil, nil, err
	}
	if server, err = smux.Server(sconn, cfg); err != nil {
		return nil, nil, err
	}
	return client, server, nil
}

// bulkRound sends n bytes over one new stream and returns the time from opening the stream until the
// reader has received the last byte.
func bulkRound(client, server *smux.Session, n int64) (time.Duration, error) {
	done := make(chan error, 1)
	go func() {
		st, err := server.AcceptStream()
		if err == nil {
			err = discardN(st, n)
			st.Close()
		}
		done <- err
	}()
	start := time.Now()
	st, err := client.OpenStream()
	if err != nil {
		return 0, err
	}
	if err := writeN(st, n); err != nil {
		return 0, err
	}
	if err := <-done; err != nil {
		return 0, fmt.Errorf("reader: %w", err)
	}
	d := time.Since(start)
	st.Close()
	return d, nil
}

// rrPayload is the request body of bench-rr, sent right after the ECHO header in one write.
const rrPayload = 64

func cmdBenchRR(args []string) int {
	fs, common := newFlagSet("bench-rr")
	count := fs.Int("count", 200000, "total requests")
	concurrency := fs.Int("concurrency", 64, "concurrent workers, each one request (stream) at a time")
	addr := fs.String("addr", "", "external server speaking the command protocol (default: an in-process Go server)")
	if err := parseFlags(fs, args); err != nil {
		return 2
	}
	cfg, err := common.smuxConfig()
	if err != nil {
		log.Printf("bench-rr: %v", err)
		return 2
	}
	startWatchdog(common.timeout(10*time.Minute), "bench-rr", nil)
	target := *addr
	if target == "" {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			finish(newResult("bench-rr").done(err))
		}
		go (&server{cfg: cfg}).acceptConns(ln)
		target = ln.Addr().String()
	}
	conn, err := net.Dial("tcp", target)
	if err != nil {
		finish(newResult("bench-rr").done(fmt.Errorf("dial %s: %w", target, err)))
	}
	sess, err := smux.Client(conn, cfg)
	if err != nil {
		finish(newResult("bench-rr").done(err))
	}
	start := time.Now()
	failed, first := runRequests(sess, *count, *concurrency)
	d := time.Since(start)
	var runErr error
	if failed > 0 {
		runErr = fmt.Errorf("%d of %d requests failed; first: %w", failed, *count, first)
	}
	sess.Close()
	finish(newResult("bench-rr").done(runErr).set("version", cfg.Version).set("count", *count).
		set("concurrency", *concurrency).set("inProcessServer", *addr == "").
		set("ms", float64(d.Microseconds()/100)/10).set("rps", float64(int64(float64(*count)/d.Seconds()))))
	return 0
}

// runRequests runs count requests on `concurrency` workers and returns the number of failures and
// the first error.
func runRequests(sess *smux.Session, count, concurrency int) (failed int64, first error) {
	var next int64
	var once sync.Once
	var wg sync.WaitGroup
	for w := 0; w < concurrency; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			req := append(command{code: cmdEcho}.encode(), randBytes(rrPayload)...)
			back := make([]byte, rrPayload)
			for atomic.AddInt64(&next, 1) <= int64(count) {
				if err := oneRequest(sess, req, back); err != nil {
					atomic.AddInt64(&failed, 1)
					once.Do(func() { first = err })
				}
			}
		}()
	}
	wg.Wait()
	return failed, first
}

// oneRequest: open a stream, send the ECHO header and the payload in one write, read the payload
// back, close. The acceptor replies only after reading, so Go's OpenStream race cannot bite.
func oneRequest(sess *smux.Session, req, back []byte) error {
	st, err := sess.OpenStream()
	if err != nil {
		return err
	}
	defer st.Close()
	if _, err := st.Write(req); err != nil {
		return fmt.Errorf("stream %d: write: %w", st.ID(), err)
	}
	if _, err := io.ReadFull(st, back); err != nil {
		return fmt.Errorf("stream %d: read: %w", st.ID(), err)
	}
	if !bytes.Equal(back, req[commandHeaderLen:]) {
		return fmt.Errorf("stream %d: echo differs", st.ID())
	}
	return nil
}
