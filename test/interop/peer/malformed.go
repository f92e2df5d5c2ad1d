package main

import (
	"encoding/binary"
	"errors"
	"fmt"
	"log"
	"math/rand"
	"net"
	"os"
	"sort"
	"strings"
	"time"
)

// The `malformed` sub-command: raw TCP, no smux. It writes a crafted frame sequence, then reads until
// the server closes the connection or the deadline passes. A strict server (our TypeScript one)
// treats each of these as a protocol error and closes; Go 1.5.16 does not (its receive loop just
// stops, or, for payloads on SYN/FIN/NOP, reads them as the next header), so against `peer serve`
// most kinds report closed=false. That difference is the point of the sub-command.

// Raw smux frame command codes (see /work/shared/PROTOCOL.md §1).
const (
	frameSYN byte = 0
	frameFIN byte = 1
	framePSH byte = 2
	frameNOP byte = 3
	frameUPD byte = 4

	frameHeaderLen = 8
)

// rawFrame encodes one frame: version, cmd, LENGTH (uint16 LE), stream id (uint32 LE), payload.
func rawFrame(version, cmd byte, sid uint32, payload []byte) []byte {
	b := make([]byte, 8+len(payload))
	b[0], b[1] = version, cmd
	binary.LittleEndian.PutUint16(b[2:4], uint16(len(payload)))
	binary.LittleEndian.PutUint32(b[4:8], sid)
	copy(b[8:], payload)
	return b
}

// malformedKinds builds the bytes of each kind for protocol version v.
var malformedKinds = map[string]func(v byte) []byte{
	// A well-formed NOP carrying a version nobody speaks.
	"badversion": func(v byte) []byte { return rawFrame(7, frameNOP, 0, nil) },
	// A command code outside 0..4.
	"badcmd": func(v byte) []byte { return rawFrame(v, 9, 0, nil) },
	// SYN must carry no payload.
	"synpayload": func(v byte) []byte { return rawFrame(v, frameSYN, 3, []byte{1, 2, 3, 4}) },
	// FIN must carry no payload (the stream exists, so only the length is wrong).
	"finpayload": func(v byte) []byte {
		return concat(rawFrame(v, frameSYN, 3, nil), rawFrame(v, frameFIN, 3, []byte{1, 2}))
	},
	// NOP must carry no payload.
	"noppayload": func(v byte) []byte { return rawFrame(v, frameNOP, 0, []byte{1}) },
	// UPD must carry exactly 8 bytes (run with -v 2; under v1 UPD is wrong anyway).
	"updlen": func(v byte) []byte {
		return concat(rawFrame(v, frameSYN, 3, nil), rawFrame(v, frameUPD, 3, []byte{1, 0, 0, 0}))
	},
	// UPD does not exist in protocol version 1 (always sent as version 1, whatever -v says).
	"updv1": func(v byte) []byte { return rawFrame(1, frameUPD, 3, make([]byte, 8)) },
	// Garbage: almost certainly a wrong version byte in the first header.
	"random": func(v byte) []byte {
		b := make([]byte, 4096)
		rand.Read(b)
		return b
	},
}

func concat(parts ...[]byte) []byte {
	var out []byte
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}

func cmdMalformed(args []string) int {
	fs, common := newFlagSet("malformed")
	addr := fs.String("addr", "", "server address host:port (required)")
	kind := fs.String("kind", "", "what to send: "+strings.Join(malformedKindNames(), ", "))
	if err := parseFlags(fs, args); err != nil {
		return 2
	}
	build, ok := malformedKinds[*kind]
	if !ok || *addr == "" {
		log.Printf("malformed: need -addr and -kind (one of %s)", strings.Join(malformedKindNames(), ", "))
		return 2
	}
	if common.version != 1 && common.version != 2 {
		log.Printf("malformed: -v must be 1 or 2")
		return 2
	}
	timeout := common.timeout(5 * time.Second)
	closed, ms, read, err := sendMalformed(*addr, build(byte(common.version)), timeout)
	if err != nil {
		log.Printf("malformed %s: %v", *kind, err)
		return 1
	}
	r := newResult("malformed").set("kind", *kind).set("version", common.version).
		set("closed", closed).set("ms", ms).set("bytesFromServer", read).set("ok", closed)
	if !closed {
		r.set("error", fmt.Sprintf("server did not close the connection within %v", timeout))
	}
	printLine(r.String())
	if !closed {
		return 1
	}
	return 0
}

// sendMalformed writes payload on a fresh TCP connection and waits up to timeout for the server to
// close it. Any read error other than our own deadline (EOF, reset) counts as closed, and so does a
// write that fails because the server already closed. It also counts the bytes the server sent
// meanwhile (NOPs, typically). err is reserved for not being able to connect at all.
func sendMalformed(addr string, payload []byte, timeout time.Duration) (closed bool, ms float64, read int, err error) {
	conn, err := net.DialTimeout("tcp", addr, timeout)
	if err != nil {
		return false, 0, 0, fmt.Errorf("dial %s: %w", addr, err)
	}
	defer conn.Close()
	start := time.Now()
	conn.SetDeadline(start.Add(timeout))
	if _, werr := conn.Write(payload); werr != nil {
		if errors.Is(werr, os.ErrDeadlineExceeded) {
			return false, msSince(start), 0, nil
		}
		return true, msSince(start), 0, nil
	}
	buf := make([]byte, 4096)
	for {
		n, rerr := conn.Read(buf)
		read += n
		if rerr != nil {
			return !errors.Is(rerr, os.ErrDeadlineExceeded), msSince(start), read, nil
		}
	}
}

func malformedKindNames() []string {
	names := make([]string, 0, len(malformedKinds))
	for n := range malformedKinds {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}
