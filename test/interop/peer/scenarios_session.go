package main

import (
	"fmt"
	"sync/atomic"
	"time"

	"github.com/xtaci/smux"
)

// Drive scenarios about the session rather than bulk data: server-opened streams, keep-alive, and
// one stalled stream next to a live one.

// scenarioAcceptEcho accepts -streams streams the server opens (serve -open-echo N) and serves each
// as an acceptor; it ends once all of them have reached EOF and been closed.
func scenarioAcceptEcho(sess *smux.Session, o driveOptions, r *result) error {
	r.set("streams", o.streams)
	// Session.SetDeadline only bounds AcceptStream, which is exactly what we need here.
	sess.SetDeadline(time.Now().Add(o.timeout))
	errs := make(chan error, o.streams)
	accepted := 0
	var acceptErr error
	for ; accepted < o.streams; accepted++ {
		st, err := sess.AcceptStream()
		if err != nil {
			acceptErr = fmt.Errorf("accepted %d of %d streams: %w", accepted, o.streams, err)
			break
		}
		go func() { errs <- serveStream(st, o.timeout) }()
	}
	err := collectErrors(errs, accepted)
	if acceptErr != nil {
		return acceptErr
	}
	return err
}

// keepAliveRounds is the number of echo round trips after the idle period.
const keepAliveRounds = 10

// scenarioKeepAliveIdle opens nothing for -idle ms, then proves the session still works with echo
// round trips. With short keep-alive settings on both sides (e.g. -kai 200 -kat 800, -idle 2500)
// each side's dead-peer check runs several times while idle and must be satisfied by the other's
// NOPs alone. IsClosed is polled throughout: only our own keep-alive can close our session.
func scenarioKeepAliveIdle(sess *smux.Session, o driveOptions, r *result) error {
	r.set("idleMs", o.idle.Milliseconds()).set("rounds", keepAliveRounds)
	deadline := time.Now().Add(o.idle)
	for time.Now().Before(deadline) {
		if sess.IsClosed() {
			return fmt.Errorf("session closed while idle (our keep-alive timed out: no frames from the server)")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err := runEchoOpener(sess, keepAliveRounds, o.timeout); err != nil {
		return fmt.Errorf("after %v idle: %w", o.idle, err)
	}
	if sess.IsClosed() {
		return fmt.Errorf("session closed right after the echo round trips")
	}
	return nil
}

// Stalled-scenario tuning: the writer's chunk size, how long the writer must make no progress to
// count as blocked, the cap on waiting for it, and a pause that lets the acceptor's echo of A pile
// up in our receive buffer before stream B starts.
const (
	stalledChunk      = 32 << 10
	stalledNoProgress = 300 * time.Millisecond
	stalledMaxWait    = 5 * time.Second
	stalledSettle     = 250 * time.Millisecond
)

// scenarioStalled shows whether one stream nobody reads blocks the others. Stream A gets an ECHO
// header and then -bytes written to it, and we never read A's echo. Once A's writer has finished or
// stopped making progress, stream B does 100 echo round trips and must finish within -timeout.
//
// Against a v2 peer B succeeds: A's echo stops at A's window, the session buffer keeps room. Against
// a v1 peer (with -bytes above the session buffer, the default) A's unread echo exhausts our 4 MiB
// token bucket, our receive loop stops, and B's replies never arrive: expect ok=false.
func scenarioStalled(sess *smux.Session, o driveOptions, r *result) error {
	a, err := openCommand(sess, command{code: cmdEcho}, 0) // no deadline: A is meant to block
	if err != nil {
		return fmt.Errorf("stream A: %w", err)
	}
	var written int64
	go func() {
		// The write errors out with io.ErrClosedPipe when the session closes at the end.
		for atomic.LoadInt64(&written) < o.bytes {
			n, err := a.Write(randBytes(stalledChunk))
			atomic.AddInt64(&written, int64(n))
			if err != nil {
				return
			}
		}
	}()
	waitForWriter(&written, o.bytes)
	time.Sleep(stalledSettle)
	r.set("aBytesWritten", atomic.LoadInt64(&written)).set("bytes", o.bytes).set("rounds", echoRounds)

	start := time.Now()
	err = runEchoOpener(sess, echoRounds, o.timeout)
	r.set("bMs", msSince(start))
	if err != nil {
		return fmt.Errorf("stream B (next to unread stream A with %d bytes written): %w", atomic.LoadInt64(&written), err)
	}
	return nil
}

// waitForWriter returns once *written reaches target, or has not grown for stalledNoProgress, or
// stalledMaxWait has passed.
func waitForWriter(written *int64, target int64) {
	start := time.Now()
	last, lastChange := int64(-1), time.Now()
	for time.Since(start) < stalledMaxWait {
		n := atomic.LoadInt64(written)
		if n >= target {
			return
		}
		if n != last {
			last, lastChange = n, time.Now()
		} else if time.Since(lastChange) >= stalledNoProgress {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
}
