// Command peer is the Go side of the nestjs-smux interop tests: a thin program around the real
// github.com/xtaci/smux (Debian's 1.5.16) that our TypeScript smux is checked against.
//
// It speaks the 16-byte stream command protocol described in ../README.md in both roles (opener and
// acceptor), so every scenario can run TS↔Go in either direction and Go↔Go as a reference. Output is
// line-oriented so go-peer.ts can parse it: "LISTENING <port>" and "RESULT <json>" on stdout,
// diagnostics on stderr.
package main

import (
	"fmt"
	"log"
	"math/rand"
	"os"
	"time"
)

// subCommands maps each sub-command name to its entry point. Every entry point parses its own flags
// and returns the process exit status.
var subCommands = map[string]func(args []string) int{
	"serve":      cmdServe,
	"drive":      cmdDrive,
	"malformed":  cmdMalformed,
	"golden":     cmdGolden,
	"bench-bulk": cmdBenchBulk,
	"bench-rr":   cmdBenchRR,
	"nestcall":   cmdNestCall,
	"neststream": cmdNestStream,
	"nestworker": cmdNestWorker,
	"writers":    cmdConcurrentWriters,
}

const usage = `usage: peer <sub-command> [flags]

sub-commands:
  serve      [-open-echo N]                       accept sessions, serve the command protocol
  drive      -addr H:P -scenario S [...]          run one opener scenario against a server
             scenarios: echo exchange sink writeclose accept-echo keepalive-idle stalled
  malformed  -addr H:P -kind K                    send a crafted frame sequence over raw TCP
             kinds: badversion badcmd synpayload finpayload noppayload updlen updv1 random
  golden     -out DIR                             capture Go's exact wire bytes into DIR/vectors.json
  bench-bulk [-bytes N] [-rounds R]               Go<->Go bulk throughput over loopback TCP
  bench-rr   [-count M] [-concurrency C] [-addr]  stream-per-request round trips
  nestcall   -addr H:P -pattern P [-data JSON]    call a NestJS ServerSmux (docs/PROTOCOL.md)
             [-timeout ms] [-headers JSON] [-event] [-expect-error] [-wait ms]
  neststream -addr H:P -pattern P -mode stream|raw  stream to a NestJS ServerSmux: DATA items (§5) or RAW bytes (§6)
             stream: [-items JSON | -count N] [-split n] [-lockstep K] [-mul M] [-end-error JSON]
             raw:    [-data JSON] [-bytes N] [-chunk n] [-download N] [-end-error JSON]
  nestworker -addr H:P [-id ID] [-serve N]         dial a ServerSmux and serve its calls (§11): go.double
  writers    -addr H:P [-writers N] [-chunk S] [-bytes T]  N goroutines Write() one stream at once (v2 window race)

common flags: -v 1|2 -kai ms -kat ms -nokeepalive -maxframe n -recvbuf n -streambuf n -timeout ms
run "peer <sub-command> -h" for the flags of one sub-command.
`

func main() {
	// Timestamps are useless when the harness interleaves our stderr with its own; the prefix tells
	// which process a diagnostic came from.
	log.SetFlags(log.Lmicroseconds)
	log.SetPrefix("[go-peer] ")
	// Go 1.19 does not seed math/rand by itself. Content need not be reproducible: every scenario
	// checks what it received against a digest or a pattern.
	rand.Seed(time.Now().UnixNano())

	if len(os.Args) < 2 {
		fmt.Fprint(os.Stderr, usage)
		os.Exit(2)
	}
	run, ok := subCommands[os.Args[1]]
	if !ok {
		fmt.Fprintf(os.Stderr, "unknown sub-command %q\n\n%s", os.Args[1], usage)
		os.Exit(2)
	}
	os.Exit(run(os.Args[2:]))
}
