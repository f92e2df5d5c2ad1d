package main

import (
	"fmt"
	"log"
	"net"
	"sort"
	"strings"
	"time"

	"github.com/xtaci/smux"
)

// The `drive` sub-command: dial a server, run smux.Client and one opener scenario, print RESULT and
// exit 0 (ok) or 1 (failed). Every wait is bounded by -timeout; a watchdog covers what is not.

// driveOptions are the scenario parameters after defaults have been applied.
type driveOptions struct {
	streams int
	bytes   int64
	idle    time.Duration
	timeout time.Duration
}

// scenario describes one drive scenario and its defaults (0 flags mean "use these").
type scenario struct {
	run            func(sess *smux.Session, o driveOptions, r *result) error
	defaultStreams int
	defaultBytes   int64
	defaultTimeout time.Duration
}

var scenarios = map[string]scenario{
	"echo":           {run: scenarioEcho, defaultTimeout: 60 * time.Second},
	"exchange":       {run: scenarioExchange, defaultStreams: 200, defaultBytes: 1 << 20, defaultTimeout: 60 * time.Second},
	"sink":           {run: scenarioSink, defaultBytes: 64 << 20, defaultTimeout: 60 * time.Second},
	"writeclose":     {run: scenarioWriteClose, defaultBytes: 1 << 20, defaultTimeout: 60 * time.Second},
	"accept-echo":    {run: scenarioAcceptEcho, defaultStreams: 5, defaultTimeout: 60 * time.Second},
	"keepalive-idle": {run: scenarioKeepAliveIdle, defaultTimeout: 60 * time.Second},
	"stalled":        {run: scenarioStalled, defaultBytes: 8 << 20, defaultTimeout: 10 * time.Second},
}

// watchdogSlack is how long the watchdog waits beyond -timeout: long enough for the scenario's own
// deadlines to fire and be reported with a precise error first.
const watchdogSlack = 10 * time.Second

func cmdDrive(args []string) int {
	fs, common := newFlagSet("drive")
	addr := fs.String("addr", "", "server address host:port (required)")
	name := fs.String("scenario", "", "scenario: "+strings.Join(scenarioNames(), ", "))
	streams := fs.Int("streams", 0, "number of streams (exchange: 200, accept-echo: 5)")
	nbytes := fs.Int64("bytes", 0, "bytes per stream (exchange: 1 MiB, sink: 64 MiB, writeclose: 1 MiB, stalled: 8 MiB)")
	idleMs := fs.Int("idle", 2500, "keepalive-idle: ms to stay idle before proving the session works")
	if err := parseFlags(fs, args); err != nil {
		return 2
	}
	sc, ok := scenarios[*name]
	if !ok || *addr == "" {
		log.Printf("drive: need -addr and -scenario (one of %s)", strings.Join(scenarioNames(), ", "))
		return 2
	}
	cfg, err := common.smuxConfig()
	if err != nil {
		log.Printf("drive: %v", err)
		return 2
	}
	o := driveOptions{
		streams: pick(*streams, sc.defaultStreams),
		bytes:   int64(pick(int(*nbytes), int(sc.defaultBytes))),
		idle:    time.Duration(*idleMs) * time.Millisecond,
		timeout: common.timeout(sc.defaultTimeout),
	}
	startWatchdog(o.timeout+o.idle+watchdogSlack, *name, func(r *result) { r.set("version", cfg.Version) })
	finish(runScenario(*name, sc, *addr, cfg, o))
	return 0 // not reached: finish exits
}

// runScenario connects, runs the scenario and closes the session. The RESULT always carries the
// scenario name, the protocol version and the elapsed time.
func runScenario(name string, sc scenario, addr string, cfg *smux.Config, o driveOptions) *result {
	r := newResult(name).set("version", cfg.Version)
	conn, err := net.DialTimeout("tcp", addr, o.timeout)
	if err != nil {
		return r.done(fmt.Errorf("dial %s: %w", addr, err))
	}
	sess, err := smux.Client(conn, cfg)
	if err != nil {
		conn.Close()
		return r.done(fmt.Errorf("smux.Client: %w", err))
	}
	start := time.Now()
	err = sc.run(sess, o, r)
	r.set("ms", msSince(start))
	// Closing the session closes the TCP connection (no FINs are sent; streams were closed by the
	// scenario). Any goroutine still blocked in smux wakes up with io.ErrClosedPipe.
	sess.Close()
	return r.done(err)
}

// pick returns v, or def when v is 0.
func pick(v, def int) int {
	if v != 0 {
		return v
	}
	return def
}

// scenarioNames lists the scenarios for usage messages.
func scenarioNames() []string {
	names := make([]string, 0, len(scenarios))
	for n := range scenarios {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// mbps converts a byte count and a duration into MB/s (MB = 10^6 bytes).
func mbps(n int64, d time.Duration) float64 {
	if d <= 0 {
		return 0
	}
	return float64(int64(float64(n)/d.Seconds()/1e6*10)) / 10
}
