package main

import (
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/xtaci/smux"
)

// server is the `serve` sub-command: a Go smux server that serves the command protocol on every
// stream a client opens and, with -open-echo, also opens streams towards each client.
type server struct {
	cfg *smux.Config
	// streamTimeout bounds each acceptor stream; 0 (the default) means none, because the opener
	// decides how long a scenario takes (a stalled stream may legitimately wait for ever).
	streamTimeout time.Duration
	// openEcho is the number of ECHO streams to open per session, echoTimeout bounds each.
	openEcho    int
	echoTimeout time.Duration
}

// openEchoRounds is the number of round trips per server-opened ECHO stream.
const openEchoRounds = 100

func cmdServe(args []string) int {
	fs, common := newFlagSet("serve")
	openEcho := fs.Int("open-echo", 0, "open N ECHO streams on each new session (prints one RESULT per session)")
	if err := parseFlags(fs, args); err != nil {
		return 2
	}
	cfg, err := common.smuxConfig()
	if err != nil {
		log.Printf("serve: %v", err)
		return 2
	}
	srv := &server{
		cfg:           cfg,
		streamTimeout: common.timeout(0),
		openEcho:      *openEcho,
		echoTimeout:   common.timeout(60 * time.Second),
	}

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Printf("serve: listen: %v", err)
		return 1
	}
	printLine(fmt.Sprintf("LISTENING %d", ln.Addr().(*net.TCPAddr).Port))
	go exitWhenStdinCloses()
	go exitOnSignal()
	return srv.acceptConns(ln)
}

// exitWhenStdinCloses is how the harness stops us: it closes our stdin. Exiting from here (rather
// than tearing sessions down one by one) is what a crashed or killed peer looks like on the wire.
func exitWhenStdinCloses() {
	io.Copy(io.Discard, os.Stdin)
	os.Exit(0)
}

// exitOnSignal makes SIGTERM / Ctrl-C a clean exit (status 0) as well.
func exitOnSignal() {
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, syscall.SIGTERM, os.Interrupt)
	<-ch
	os.Exit(0)
}

// acceptConns accepts TCP connections for ever, one smux.Server session each.
func (s *server) acceptConns(ln net.Listener) int {
	for {
		conn, err := ln.Accept()
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			log.Printf("serve: accept: %v", err)
			return 1
		}
		go s.serveConn(conn)
	}
}

// serveConn runs one session: it accepts streams until the session fails and serves each in its
// own goroutine, so a stream that blocks (a stalled reader, a full window) never holds up others.
func (s *server) serveConn(conn net.Conn) {
	peer := conn.RemoteAddr().String()
	sess, err := smux.Server(conn, s.cfg)
	if err != nil {
		log.Printf("serve %s: %v", peer, err)
		conn.Close()
		return
	}
	if s.openEcho > 0 {
		go s.runOpenEcho(sess)
	}
	for {
		st, err := sess.AcceptStream()
		if err != nil {
			s.endSession(sess, peer, err)
			return
		}
		go func() {
			if err := serveStream(st, s.streamTimeout); err != nil {
				log.Printf("serve %s: %v", peer, err)
			}
		}()
	}
}

// endSession reacts to AcceptStream failing, the way a typical 1.5.16 application does.
//
// A protocol error (bad version, unknown command) stops 1.5.16's receive loop but neither closes the
// session nor the TCP connection; we keep it that way, so `malformed` against this server shows
// Go's real behaviour: the connection stays open until the keep-alive timeout closes it (never, with
// -nokeepalive). Any other error is the connection itself failing (usually EOF), and we close the
// session so its streams and goroutines go away.
func (s *server) endSession(sess *smux.Session, peer string, err error) {
	if errors.Is(err, smux.ErrInvalidProtocol) {
		log.Printf("serve %s: %v; leaving the connection to the keep-alive timeout (1.5.16 behaviour)", peer, err)
		return
	}
	switch {
	case sess.IsClosed():
		// Only our own keep-alive closes a server session without us calling Close.
		log.Printf("serve %s: session closed by the keep-alive timeout", peer)
	case !errors.Is(err, io.EOF):
		log.Printf("serve %s: session ended: %v", peer, err)
	}
	sess.Close()
}

// runOpenEcho opens s.openEcho ECHO streams concurrently on a new session, does the round trips on
// each, and prints one RESULT for the session.
func (s *server) runOpenEcho(sess *smux.Session) {
	start := time.Now()
	errs := make(chan error, s.openEcho)
	for i := 0; i < s.openEcho; i++ {
		go func() { errs <- runEchoOpener(sess, openEchoRounds, s.echoTimeout) }()
	}
	err := collectErrors(errs, s.openEcho)
	r := newResult("server-open-echo").done(err).
		set("streams", s.openEcho).set("rounds", openEchoRounds).set("ms", msSince(start))
	if err != nil {
		log.Printf("serve: open-echo: %v", err)
	}
	printLine(r.String())
}

// collectErrors waits for n results on errs and summarises the failures, if any.
func collectErrors(errs <-chan error, n int) error {
	var first error
	failed := 0
	for i := 0; i < n; i++ {
		if err := <-errs; err != nil {
			failed++
			if first == nil {
				first = err
			}
		}
	}
	if failed == 0 {
		return nil
	}
	return fmt.Errorf("%d of %d streams failed; first: %w", failed, n, first)
}
