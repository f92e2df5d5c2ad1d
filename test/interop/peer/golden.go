package main

import (
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log"
	"net"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/xtaci/smux"
)

// The `golden` sub-command: capture exactly the bytes Go's smux writes for a fixed list of
// operations (golden_vectors.go) and store them, with our own decode, in DIR/vectors.json. The
// TypeScript tests check their encoder and decoder against these bytes.
//
// Each vector runs on a fresh client/server session pair joined by net.Pipe, with both ends'
// writes recorded. net.Pipe is synchronous and in-memory, so a capture needs no ports and sees
// every frame exactly as smux handed it to conn.Write (one Write per frame).

// recorder is a net.Conn that keeps a copy of everything written through it.
type recorder struct {
	net.Conn
	mu      sync.Mutex
	written []byte
}

func (r *recorder) Write(p []byte) (int, error) {
	n, err := r.Conn.Write(p)
	r.mu.Lock()
	r.written = append(r.written, p[:n]...)
	r.mu.Unlock()
	return n, err
}

// frame is one decoded frame plus the raw bytes it was decoded from.
type frame struct {
	version, cmd byte
	length       uint16
	sid          uint32
	payload      []byte
	raw          []byte
}

// decodeFrames splits b into complete frames; a trailing partial frame is left out.
func decodeFrames(b []byte) []frame {
	var out []frame
	for len(b) >= frameHeaderLen {
		length := binary.LittleEndian.Uint16(b[2:4])
		size := frameHeaderLen + int(length)
		if len(b) < size {
			break
		}
		out = append(out, frame{
			version: b[0], cmd: b[1], length: length,
			sid:     binary.LittleEndian.Uint32(b[4:8]),
			payload: b[frameHeaderLen:size], raw: b[:size],
		})
		b = b[size:]
	}
	return out
}

// frames returns the complete frames written so far.
func (r *recorder) frames() []frame {
	r.mu.Lock()
	defer r.mu.Unlock()
	return decodeFrames(append([]byte(nil), r.written...))
}

// sessionPair is a Go client and a Go server talking over a recorded in-memory pipe.
type sessionPair struct {
	client, server       *smux.Session
	clientRec, serverRec *recorder
}

func newSessionPair(clientCfg, serverCfg *smux.Config) (*sessionPair, error) {
	c, s := net.Pipe()
	p := &sessionPair{clientRec: &recorder{Conn: c}, serverRec: &recorder{Conn: s}}
	var err error
	if p.client, err = smux.Client(p.clientRec, clientCfg); err != nil {
		return nil, err
	}
	if p.server, err = smux.Server(p.serverRec, serverCfg); err != nil {
		p.client.Close()
		return nil, err
	}
	return p, nil
}

func (p *sessionPair) close() {
	p.client.Close()
	p.server.Close()
}

// recorderOf returns the recorder of role ("client" or "server").
func (p *sessionPair) recorderOf(role string) *recorder {
	if role == "server" {
		return p.serverRec
	}
	return p.clientRec
}

// captureTimeout bounds how long a vector may take to produce its frames.
const captureTimeout = 5 * time.Second

// waitFrames polls rec until `count` frames match keep, and returns those (the first `count`).
// Frames that do not match (such as keep-alive NOPs) are filtered out, which keeps captures
// deterministic whatever the timing.
func waitFrames(rec *recorder, keep func(frame) bool, count int) ([]frame, error) {
	deadline := time.Now().Add(captureTimeout)
	for {
		var matched []frame
		for _, f := range rec.frames() {
			if keep(f) {
				matched = append(matched, f)
			}
		}
		if len(matched) >= count {
			return matched[:count], nil
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("only %d of %d expected frames after %v", len(matched), count, captureTimeout)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// vectorJSON is one entry of vectors.json.
type vectorJSON struct {
	Name        string      `json:"name"`
	Description string      `json:"description"`
	Version     int         `json:"version"`
	Role        string      `json:"role"`
	Hex         string      `json:"hex"`
	Frames      []frameJSON `json:"frames"`
}

type frameJSON struct {
	Version    byte   `json:"version"`
	Cmd        byte   `json:"cmd"`
	Length     uint16 `json:"length"`
	StreamID   uint32 `json:"streamId"`
	PayloadHex string `json:"payloadHex"`
}

// captureVector runs one vector on a fresh session pair and returns its JSON entry.
func captureVector(v vectorSpec) (vectorJSON, error) {
	clientCfg, serverCfg := smux.DefaultConfig(), smux.DefaultConfig()
	for _, cfg := range []*smux.Config{clientCfg, serverCfg} {
		cfg.Version = v.version
		if v.configure != nil {
			v.configure(cfg)
		}
	}
	p, err := newSessionPair(clientCfg, serverCfg)
	if err != nil {
		return vectorJSON{}, err
	}
	defer p.close()
	p.server.SetDeadline(time.Now().Add(captureTimeout)) // bounds AcceptStream in the actions
	if err := v.act(p); err != nil {
		return vectorJSON{}, fmt.Errorf("action: %w", err)
	}
	frames, err := waitFrames(p.recorderOf(v.role), v.keep, v.count)
	if err != nil {
		return vectorJSON{}, err
	}
	out := vectorJSON{Name: v.name, Description: v.description, Version: v.version, Role: v.role}
	var raw []byte
	for _, f := range frames {
		raw = append(raw, f.raw...)
	}
	out.Hex = hex.EncodeToString(raw)
	// The frame list is decoded again from the stored hex, so it describes exactly those bytes.
	for _, f := range decodeFrames(raw) {
		out.Frames = append(out.Frames, frameJSON{
			Version: f.version, Cmd: f.cmd, Length: f.length, StreamID: f.sid,
			PayloadHex: hex.EncodeToString(f.payload),
		})
	}
	return out, nil
}

func cmdGolden(args []string) int {
	fs, _ := newFlagSet("golden")
	outDir := fs.String("out", "", "directory to write vectors.json into (required)")
	if err := parseFlags(fs, args); err != nil {
		return 2
	}
	if *outDir == "" {
		log.Printf("golden: need -out DIR")
		return 2
	}
	var vectors []vectorJSON
	var problems []string
	for _, spec := range goldenVectors {
		v, err := captureVector(spec)
		if err != nil {
			problems = append(problems, fmt.Sprintf("%s: %v", spec.name, err))
			continue
		}
		if spec.check != nil {
			if err := spec.check(v); err != nil {
				problems = append(problems, fmt.Sprintf("%s: %v", spec.name, err))
			}
		}
		vectors = append(vectors, v)
	}
	for _, p := range problems {
		log.Printf("golden: %s", p)
	}
	path := filepath.Join(*outDir, "vectors.json")
	if err := writeJSON(path, vectors); err != nil {
		log.Printf("golden: %v", err)
		return 1
	}
	r := newResult("golden").set("vectors", len(vectors)).set("out", path)
	if len(problems) > 0 {
		r.done(fmt.Errorf("%d problems; first: %s", len(problems), problems[0]))
	} else {
		r.done(nil)
	}
	printLine(r.String())
	if !r.ok() {
		return 1
	}
	return 0
}

// writeJSON writes v as indented JSON with a trailing newline, creating the directory if needed.
func writeJSON(path string, v interface{}) error {
	data, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	return os.WriteFile(path, append(data, '\n'), 0o644)
}
