package main

import (
	"encoding/binary"
	"fmt"
)

// The stream command protocol of ../README.md. The opener writes this 16-byte header first on every
// stream; the acceptor reads it before sending anything. Keeping the acceptor silent until then
// sidesteps Go's OpenStream race (a Go opener registers its stream only after its SYN is written,
// so bytes an acceptor sends straight after accepting can be dropped).
const commandHeaderLen = 16

// Command codes (byte 0 of the header).
const (
	cmdEcho       byte = 1 // acceptor copies bytes back until EOF, then closes
	cmdExchange   byte = 2 // both write B random bytes concurrently; acceptor adds two digests
	cmdSink       byte = 3 // acceptor reads B bytes, answers SHA-256 of them
	cmdFinReply   byte = 4 // acceptor reads to EOF, answers SHA-256 + A bytes of pattern
	cmdWriteClose byte = 5 // acceptor writes B bytes of pattern, then closes at once
	cmdDiscard    byte = 6 // acceptor reads B bytes, answers the count as uint64 LE
)

// commandNames is used in diagnostics.
var commandNames = map[byte]string{
	cmdEcho: "ECHO", cmdExchange: "EXCHANGE", cmdSink: "SINK",
	cmdFinReply: "FINREPLY", cmdWriteClose: "WRITECLOSE", cmdDiscard: "DISCARD",
}

// command is a decoded header: code, A (uint32) and B (uint64), both little-endian on the wire.
type command struct {
	code byte
	a    uint32
	b    uint64
}

// encode renders the 16-byte header; bytes 1..3 stay zero.
func (c command) encode() []byte {
	h := make([]byte, commandHeaderLen)
	h[0] = c.code
	binary.LittleEndian.PutUint32(h[4:8], c.a)
	binary.LittleEndian.PutUint64(h[8:16], c.b)
	return h
}

// decodeCommand parses a header. B must stay below 2^53 so the TypeScript side can hold it in a
// number; a larger value is a broken peer, not a big transfer.
func decodeCommand(h []byte) (command, error) {
	c := command{code: h[0], a: binary.LittleEndian.Uint32(h[4:8]), b: binary.LittleEndian.Uint64(h[8:16])}
	if h[1] != 0 || h[2] != 0 || h[3] != 0 {
		return c, fmt.Errorf("command header bytes 1..3 not zero: % x", h[:4])
	}
	if c.b >= 1<<53 {
		return c, fmt.Errorf("command %s: B=%d is not below 2^53", c.name(), c.b)
	}
	return c, nil
}

// name returns the command's name for messages.
func (c command) name() string {
	if n, ok := commandNames[c.code]; ok {
		return n
	}
	return fmt.Sprintf("unknown(%d)", c.code)
}
