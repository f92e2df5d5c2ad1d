package main

import (
	"time"

	"github.com/xtaci/smux"
)

// Drive scenarios that move data over streams we open (the opener role). Each returns nil on success
// and adds its figures to r.

// echoRounds is the number of round trips of the echo scenario, as in Go's own TestEcho.
const echoRounds = 100

// scenarioEcho: one ECHO stream, 100 round trips of 1..200 random bytes, then close.
func scenarioEcho(sess *smux.Session, o driveOptions, r *result) error {
	r.set("streams", 1).set("rounds", echoRounds)
	return runEchoOpener(sess, echoRounds, o.timeout)
}

// scenarioExchange: -streams concurrent EXCHANGE streams of -bytes each way. With the defaults
// (200 × 1 MiB) far more data is in flight than the 4 MiB session buffer, so this exercises the
// token bucket and, under v2, every stream's window in both directions at once.
func scenarioExchange(sess *smux.Session, o driveOptions, r *result) error {
	start := time.Now()
	errs := make(chan error, o.streams)
	for i := 0; i < o.streams; i++ {
		go func() { errs <- runExchangeOpener(sess, o.bytes, o.timeout) }()
	}
	err := collectErrors(errs, o.streams)
	total := 2 * o.bytes * int64(o.streams) // both directions
	r.set("streams", o.streams).set("bytes", o.bytes).set("totalBytes", total)
	if err == nil {
		r.set("mbps", mbps(total, time.Since(start)))
	}
	return err
}

// scenarioSink: one SINK stream of -bytes (64 MiB by default) written in random sizes of 1 B..1 MiB.
func scenarioSink(sess *smux.Session, o driveOptions, r *result) error {
	start := time.Now()
	err := runSinkOpener(sess, o.bytes, o.timeout)
	r.set("streams", 1).set("bytes", o.bytes)
	if err == nil {
		r.set("mbps", mbps(o.bytes, time.Since(start)))
	}
	return err
}

// scenarioWriteClose: the acceptor writes -bytes of the pattern and closes at once; every byte must
// arrive before EOF (FIN must not overtake data).
func scenarioWriteClose(sess *smux.Session, o driveOptions, r *result) error {
	r.set("streams", 1).set("bytes", o.bytes)
	return runWriteCloseOpener(sess, o.bytes, o.timeout)
}
