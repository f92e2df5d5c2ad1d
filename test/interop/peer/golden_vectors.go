package main

import (
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/xtaci/smux"
)

// vectorSpec describes one golden vector: the session settings, what to do on a fresh session pair,
// whose bytes to keep (role), which frames of that side to keep (keep, first count matches), and an
// optional check of the result against facts we already know (PROTOCOL.md §1).
type vectorSpec struct {
	name, description string
	version           int
	role              string
	configure         func(cfg *smux.Config)
	act               func(p *sessionPair) error
	keep              func(f frame) bool
	count             int
	check             func(v vectorJSON) error
}

// ping is the payload of the small PSH vectors; bigWrite is larger than one default frame (32768),
// so Go must split it (into 32768 + 7232).
var (
	ping     = []byte("ping")
	bigWrite = func() []byte { b := make([]byte, 40000); fillPattern(b, 0); return b }()
)

var goldenVectors = []vectorSpec{
	{name: "v1-client-syn-first", version: 1, role: "client",
		description: "v1 client opens its first stream: SYN with stream id 3 (client ids start at 1 and add 2 before use)",
		act:         clientOpen(1), keep: cmdSid(frameSYN, 3), count: 1,
		check: expectHex("01 00 0000 03000000")},
	{name: "v1-client-syn-second", version: 1, role: "client",
		description: "v1 client opens a second stream: SYN with stream id 5",
		act:         clientOpen(2), keep: cmdSid(frameSYN, 5), count: 1,
		check: expectHex("01 00 0000 05000000")},
	{name: "v1-server-syn-first", version: 1, role: "server",
		description: "v1 server opens its first stream: SYN with stream id 2 (server ids start at 0)",
		act:         serverOpen(1), keep: cmdSid(frameSYN, 2), count: 1,
		check: expectHex("01 00 0000 02000000")},
	{name: "v1-server-syn-second", version: 1, role: "server",
		description: "v1 server opens a second stream: SYN with stream id 4",
		act:         serverOpen(2), keep: cmdSid(frameSYN, 4), count: 1,
		check: expectHex("01 00 0000 04000000")},
	{name: "v1-client-psh-ping", version: 1, role: "client",
		description: `v1 client writes "ping" on stream 3: one PSH frame`,
		act:         clientOpenWrite(ping), keep: cmdSid(framePSH, 3), count: 1,
		check: expectHex("01 02 0400 03000000 70696e67")},
	{name: "v1-client-fin", version: 1, role: "client",
		description: "v1 client closes stream 3 (Stream.Close): FIN",
		act:         clientOpenWriteClose(ping), keep: cmdSid(frameFIN, 3), count: 1,
		check: expectHex("01 01 0000 03000000")},
	{name: "v1-client-open-write-close", version: 1, role: "client",
		description: `v1 client transcript: open stream 3, write "ping", close (SYN, PSH, FIN; keep-alive NOPs filtered out)`,
		act:         clientOpenWriteClose(ping), keep: notNOP, count: 3,
		check: expectHex("01 00 0000 03000000  01 02 0400 03000000 70696e67  01 01 0000 03000000")},
	{name: "v1-server-psh-pong", version: 1, role: "server",
		description: `v1 server reads "ping" on the client's stream 3 and writes "pong" back: one PSH frame`,
		act:         serverReplies(ping, []byte("pong")), keep: cmdSid(framePSH, 3), count: 1,
		check: expectHex("01 02 0400 03000000 706f6e67")},
	{name: "v1-nop", version: 1, role: "client",
		description: "v1 keep-alive: NOP, stream id 0, no payload (KeepAliveInterval shortened to 20 ms to capture one)",
		configure:   fastKeepAlive, act: nothing, keep: isCmd(frameNOP), count: 1,
		check: expectHex("01 03 0000 00000000")},
	{name: "v1-client-psh-split-40000", version: 1, role: "client",
		description: "v1 client writes 40000 bytes (pattern i % 251) in one Write with MaxFrameSize 32768: two PSH frames, 32768 + 7232",
		act:         clientOpenWrite(bigWrite), keep: cmdSid(framePSH, 3), count: 2,
		check: expectLengths(32768, 7232)},
	{name: "v2-client-syn-first", version: 2, role: "client",
		description: "v2 client opens its first stream: SYN with stream id 3",
		act:         clientOpen(1), keep: cmdSid(frameSYN, 3), count: 1,
		check: expectHex("02 00 0000 03000000")},
	{name: "v2-client-psh-ping", version: 2, role: "client",
		description: `v2 client writes "ping" on stream 3: one PSH frame`,
		act:         clientOpenWrite(ping), keep: cmdSid(framePSH, 3), count: 1,
		check: expectHex("02 02 0400 03000000 70696e67")},
	{name: "v2-client-fin", version: 2, role: "client",
		description: "v2 client closes stream 3: FIN",
		act:         clientOpenWriteClose(ping), keep: cmdSid(frameFIN, 3), count: 1,
		check: expectHex("02 01 0000 03000000")},
	{name: "v2-nop", version: 2, role: "client",
		description: "v2 keep-alive: NOP, stream id 0 (KeepAliveInterval shortened to 20 ms)",
		configure:   fastKeepAlive, act: nothing, keep: isCmd(frameNOP), count: 1,
		check: expectHex("02 03 0000 00000000")},
	{name: "v2-server-upd-first-read", version: 2, role: "server",
		description: `v2 server's first Read of 4 bytes ("ping") on stream 3 sends UPD consumed=4, window=MaxStreamBuffer 65536`,
		act:         serverReads(ping, 4), keep: cmdSid(frameUPD, 3), count: 1,
		check: expectHex("02 04 0800 03000000 04000000 00000100")},
	{name: "v2-server-upd-half-window", version: 2, role: "server",
		description: `v2 server reads "ping" (UPD consumed=4), then 32768 bytes of a 40000-byte write: the second UPD goes out once 32768 (MaxStreamBuffer/2) more bytes are consumed, consumed=32772`,
		act:         serverReads(append(append([]byte(nil), ping...), bigWrite...), 4, 32768), keep: cmdSid(frameUPD, 3), count: 2,
		check: expectHex("02 04 0800 03000000 04000000 00000100  02 04 0800 03000000 04800000 00000100")},
	{name: "v2-server-upd-window-1mib", version: 2, role: "server",
		description: "v2 server with MaxStreamBuffer 1048576 (MaxReceiveBuffer 4 MiB): first Read of 4 bytes sends UPD consumed=4, window=1048576",
		configure:   func(c *smux.Config) { c.MaxStreamBuffer = 1 << 20 },
		act:         serverReads(ping, 4), keep: cmdSid(frameUPD, 3), count: 1,
		check: expectHex("02 04 0800 03000000 04000000 00001000")},
}

// Frame filters.
func isCmd(cmd byte) func(frame) bool { return func(f frame) bool { return f.cmd == cmd } }
func notNOP(f frame) bool             { return f.cmd != frameNOP }
func cmdSid(cmd byte, sid uint32) func(frame) bool {
	return func(f frame) bool { return f.cmd == cmd && f.sid == sid }
}

// fastKeepAlive makes NOPs come every 20 ms without letting the dead-peer check close the session
// during the capture.
func fastKeepAlive(c *smux.Config) {
	c.KeepAliveInterval = 20 * time.Millisecond
	c.KeepAliveTimeout = 10 * time.Second
}

// Actions. Each stream operation in smux 1.5.16 returns only after its frames reached conn.Write,
// so running them in order yields frames in that order.
func nothing(*sessionPair) error { return nil }

func clientOpen(n int) func(*sessionPair) error {
	return func(p *sessionPair) error {
		for i := 0; i < n; i++ {
			if _, err := p.client.OpenStream(); err != nil {
				return err
			}
		}
		return nil
	}
}

func serverOpen(n int) func(*sessionPair) error {
	return func(p *sessionPair) error {
		for i := 0; i < n; i++ {
			if _, err := p.server.OpenStream(); err != nil {
				return err
			}
		}
		return nil
	}
}

func clientOpenWrite(data []byte) func(*sessionPair) error {
	return func(p *sessionPair) error {
		st, err := p.client.OpenStream()
		if err == nil {
			_, err = st.Write(data)
		}
		return err
	}
}

func clientOpenWriteClose(data []byte) func(*sessionPair) error {
	return func(p *sessionPair) error {
		st, err := p.client.OpenStream()
		if err == nil {
			_, err = st.Write(data)
		}
		if err == nil {
			err = st.Close()
		}
		return err
	}
}

// clientWritesServerReads has the client write data on stream 3 and the server accept it and read
// it in reads of the given sizes (each with io.ReadFull, so each size is consumed exactly).
func clientWritesServerReads(p *sessionPair, data []byte, sizes ...int) (*smux.Stream, error) {
	if err := clientOpenWrite(data)(p); err != nil {
		return nil, err
	}
	st, err := p.server.AcceptStream()
	if err != nil {
		return nil, err
	}
	st.SetReadDeadline(time.Now().Add(captureTimeout))
	for _, n := range sizes {
		if _, err := io.ReadFull(st, make([]byte, n)); err != nil {
			return nil, err
		}
	}
	return st, nil
}

func serverReads(data []byte, sizes ...int) func(*sessionPair) error {
	return func(p *sessionPair) error {
		_, err := clientWritesServerReads(p, data, sizes...)
		return err
	}
}

// serverReplies has the server read the client's request fully, then write reply on the same stream.
func serverReplies(request, reply []byte) func(*sessionPair) error {
	return func(p *sessionPair) error {
		st, err := clientWritesServerReads(p, request, len(request))
		if err == nil {
			_, err = st.Write(reply)
		}
		return err
	}
}

// Checks.
func expectHex(spaced string) func(vectorJSON) error {
	want := strings.ReplaceAll(spaced, " ", "")
	return func(v vectorJSON) error {
		if v.Hex != want {
			return fmt.Errorf("captured %s, expected %s", v.Hex, want)
		}
		return nil
	}
}

func expectLengths(lengths ...uint16) func(vectorJSON) error {
	return func(v vectorJSON) error {
		if len(v.Frames) != len(lengths) {
			return fmt.Errorf("%d frames, expected %d", len(v.Frames), len(lengths))
		}
		for i, l := range lengths {
			if v.Frames[i].Length != l {
				return fmt.Errorf("frame %d has length %d, expected %d", i, v.Frames[i].Length, l)
			}
		}
		return nil
	}
}
