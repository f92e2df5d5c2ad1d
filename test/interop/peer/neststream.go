package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"math"
	"net"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/xtaci/smux"
)

// The `neststream` sub-command: a Go caller of the streaming calls of the nestjs-smux call protocol
// (docs/PROTOCOL.md §5, §6), with both directions of the stream running at once: one goroutine
// writes, another reads, as a Go service streaming to a NestJS microservice would.
//
//   - `-mode stream` (§5, a client stream): REQUEST + STREAM (no body), then one DATA message per item,
//     then END (END + ERROR with -end-error); meanwhile RESPONSE messages are read until LAST. With
//     -mul M every reply must be the item times M, in order (a bidirectional stream, checked here);
//     with -lockstep K the first K items each wait for their reply before the next is written, so a
//     server that only answers after END cannot pass.
//   - `-mode raw` (§6, a byte stream): REQUEST + RAW (body: -data), then -bytes pseudo-random bytes as
//     RAW messages, then END; meanwhile the server's RAW messages are read until its END + LAST. Both
//     directions are hashed (SHA-256). With -download N the server's first N bytes are its data and
//     what follows is a trailer (the handler's own report), returned as text.
//
// RESULT {"scenario":"neststream","ok":…,"error":…,…}; see ../README.md for the fields. As in
// `nestcall` every wait is bounded by -wait and a watchdog is the backstop.

// Message kinds only the streaming calls use (the others are in nestcall.go).
const (
	callKindData byte = 4
	callKindEnd  byte = 5
)

// rawChunkMax is the largest RAW body we send: §6 caps a message at 64 KiB of bytes.
const rawChunkMax = 64 * 1024

// maxReportedValues bounds the `values` of a RESULT line: only the first ones are shown (longer
// replies are checked here with -mul, and counted).
const maxReportedValues = 1000

// maxTrailer bounds the trailer kept after -download bytes.
const maxTrailer = 64 * 1024

// streamItem is one item of a client stream: its encoded DATA message and, for a JSON number, its value.
type streamItem struct {
	wire     []byte
	number   float64
	isNumber bool
}

// streamItems yields the items to send: a fixed list (-items) or the numbers 1..count (-count).
type streamItems struct {
	list  []streamItem
	count int
}

func (s *streamItems) len() int {
	if s.list != nil {
		return len(s.list)
	}
	return s.count
}

func (s *streamItems) at(i int) streamItem {
	if s.list != nil {
		return s.list[i]
	}
	text := strconv.Itoa(i + 1)
	wire, _ := encodeCallMessage(callMessage{kind: callKindData, encoding: callEncJSON, body: []byte(text)})
	return streamItem{wire: wire, number: float64(i + 1), isNumber: true}
}

// parseStreamItems reads -items: a JSON array whose elements are sent as JSON bodies, except
// {"$bytes":"<hex>"} (raw bytes, encoding 2), {"$text":"…"} (a UTF-8 string, encoding 3) and
// {"$none":true} (no value, encoding 0) — the forms `nestcall` prints bodies in.
func parseStreamItems(text string) ([]streamItem, error) {
	var raw []json.RawMessage
	if err := json.Unmarshal([]byte(text), &raw); err != nil {
		return nil, fmt.Errorf("-items must be a JSON array: %v", err)
	}
	items := make([]streamItem, 0, len(raw))
	for i, element := range raw {
		m := callMessage{kind: callKindData, encoding: callEncJSON}
		var special map[string]json.RawMessage
		if json.Unmarshal(element, &special) == nil && len(special) == 1 {
			var s string
			switch {
			case special["$bytes"] != nil:
				if json.Unmarshal(special["$bytes"], &s) != nil {
					return nil, fmt.Errorf("-items[%d]: $bytes needs a hex string", i)
				}
				b, err := hex.DecodeString(s)
				if err != nil {
					return nil, fmt.Errorf("-items[%d]: %v", i, err)
				}
				m.encoding, m.body = callEncBytes, b
			case special["$text"] != nil:
				if json.Unmarshal(special["$text"], &s) != nil {
					return nil, fmt.Errorf("-items[%d]: $text needs a string", i)
				}
				m.encoding, m.body = callEncString, []byte(s)
			case special["$none"] != nil:
				m.encoding = callEncNone
			}
		}
		if m.encoding == callEncJSON {
			var compact bytes.Buffer
			_ = json.Compact(&compact, element)
			m.body = compact.Bytes()
		}
		wire, _ := encodeCallMessage(m)
		item := streamItem{wire: wire}
		if m.encoding == callEncJSON {
			item.isNumber = json.Unmarshal(m.body, &item.number) == nil
		}
		items = append(items, item)
	}
	return items, nil
}

// splitWriter writes messages to w cut into slices of random size 1..max, so that a message spans
// frames and a frame holds the ends of several (§1: frame boundaries mean nothing). max 0 writes
// each message whole in one Write.
type splitWriter struct {
	w       io.Writer
	max     int
	pending []byte
	next    int
}

func (s *splitWriter) write(msg []byte) error {
	if s.max <= 0 {
		_, err := s.w.Write(msg)
		return err
	}
	s.pending = append(s.pending, msg...)
	for {
		if s.next == 0 {
			s.next = randSize(s.max)
		}
		if len(s.pending) < s.next {
			return nil
		}
		if _, err := s.w.Write(s.pending[:s.next]); err != nil {
			return err
		}
		s.pending = append(s.pending[:0], s.pending[s.next:]...)
		s.next = 0
	}
}

// flush writes whatever is pending (before waiting for a reply, and after END).
func (s *splitWriter) flush() error {
	if len(s.pending) == 0 {
		return nil
	}
	_, err := s.w.Write(s.pending)
	s.pending = s.pending[:0]
	return err
}

// streamOptions are the flags of one neststream run.
type streamOptions struct {
	mode        string
	items       *streamItems
	split       int
	lockstep    int
	mul         float64
	endError    []byte // JSON body of END + ERROR; nil: a plain END
	rawBytes    int64
	rawChunk    int
	download    int64 // -1: every byte the server sends is data
	expectError bool
	maxMsg      uint32
}

func cmdNestStream(args []string) int {
	fs, common := newFlagSet("neststream")
	addr := fs.String("addr", "", "server address host:port (required)")
	pattern := fs.String("pattern", "", `pattern: a string, or a JSON object such as {"cmd":"sum"} (then sent with PATTERN_JSON)`)
	mode := fs.String("mode", "stream", "stream: REQUEST + STREAM, DATA…, END (§5); raw: REQUEST + RAW, RAW…, END (§6)")
	data := fs.String("data", "", "raw mode: the REQUEST's data as JSON text (empty: no value)")
	headers := fs.String("headers", "", `headers (Nest metadata): a JSON object of string values`)
	id := fs.String("id", "1", "packet id (ID field of the REQUEST)")
	itemsFlag := fs.String("items", "", `stream mode: the items, a JSON array; {"$bytes":"<hex>"}, {"$text":"…"} and {"$none":true} pick the other encodings`)
	count := fs.Int("count", 0, "stream mode: send the numbers 1..count as items (instead of -items)")
	split := fs.Int("split", 0, "stream mode: write the messages cut into random slices of 1..split bytes (0: one Write per message)")
	lockstep := fs.Int("lockstep", 0, "stream mode: the first K items each wait for their reply before the next is written")
	mul := fs.Float64("mul", 0, "stream mode: expect one reply per item, in order, equal to the item times this (0: no check)")
	endError := fs.String("end-error", "", "end our direction with END + ERROR carrying this JSON body instead of END")
	rawBytes := fs.Int64("bytes", 0, "raw mode: bytes to upload")
	rawChunk := fs.Int("chunk", rawChunkMax, "raw mode: RAW bodies are of random size 1..chunk bytes (at most 64 KiB)")
	download := fs.Int64("download", -1, "raw mode: the server's first N bytes are data (hashed), the rest a trailer (-1: all data)")
	expectError := fs.Bool("expect-error", false, "succeed (exit 0) only when the call ends with an ERROR")
	waitMs := fs.Int("wait", 30000, "bound on every wait in ms")
	maxMsg := fs.Int("max-message", 64<<20, "largest message length accepted from the server")
	if err := parseFlags(fs, args); err != nil {
		return 2
	}
	usageError := func(format string, a ...interface{}) int {
		log.Printf("neststream: "+format, a...)
		return 2
	}
	if *addr == "" || *pattern == "" {
		return usageError("need -addr and -pattern")
	}
	cfg, err := common.smuxConfig()
	if err != nil {
		return usageError("%v", err)
	}
	opts := streamOptions{mode: *mode, split: *split, lockstep: *lockstep, mul: *mul, rawBytes: *rawBytes,
		rawChunk: *rawChunk, download: *download, expectError: *expectError, maxMsg: uint32(*maxMsg)}
	if *endError != "" {
		if !json.Valid([]byte(*endError)) {
			return usageError("-end-error is not valid JSON: %q", *endError)
		}
		opts.endError = []byte(*endError)
	}
	var request callMessage
	switch *mode {
	case "stream":
		if *data != "" {
			return usageError("a streamed REQUEST has no body (§5): -data is for -mode raw")
		}
		opts.items = &streamItems{count: *count}
		if *itemsFlag != "" {
			if *count != 0 {
				return usageError("-items or -count, not both")
			}
			if opts.items.list, err = parseStreamItems(*itemsFlag); err != nil {
				return usageError("%v", err)
			}
		}
		if opts.lockstep > opts.items.len() {
			return usageError("-lockstep %d is more than the %d items", opts.lockstep, opts.items.len())
		}
		request, err = buildCallMessage(false, *id, *pattern, "", *headers, 0)
		request.flags |= callFlagStream
	case "raw":
		if *rawChunk < 1 || *rawChunk > rawChunkMax {
			return usageError("-chunk must be 1..%d", rawChunkMax)
		}
		request, err = buildCallMessage(false, *id, *pattern, *data, *headers, 0)
		request.flags |= callFlagRaw
	default:
		return usageError("unknown -mode %q (stream, raw)", *mode)
	}
	if err != nil {
		return usageError("%v", err)
	}
	wire, err := encodeCallMessage(request)
	if err != nil {
		return usageError("%v", err)
	}
	wait := time.Duration(*waitMs) * time.Millisecond
	extra := func(r *result) { r.set("mode", *mode).set("version", cfg.Version) }
	startWatchdog(wait+watchdogSlack, "neststream", extra)
	r := newResult("neststream")
	extra(r)
	r.set("request", hex.EncodeToString(wire))
	start := time.Now()
	runNestStream(*addr, cfg, wire, opts, time.Now().Add(wait), r)
	ms := msSince(start)
	r.set("ms", ms)
	if moved, ok := r.vals["moved"].(int64); ok && ms > 0 {
		r.set("mbps", math.Round(float64(moved)/ms/1000*10)/10) // MB (10^6 bytes) per second
	}
	finish(r)
	return 0 // not reached: finish exits
}

// writerOutcome is how our direction ended.
type writerOutcome struct {
	err      error
	items    int   // stream mode: DATA messages written
	bytes    int64 // raw mode: bytes written
	endSent  bool
	stopped  bool  // stopped early: the server's LAST (or error) came first
	progress int64 // replies (stream) or bytes (raw) received when our END went out
}

// readerOutcome is how the server's direction ended: its last message, or a failure.
type readerOutcome struct {
	err   error // a failure of the transport or the protocol (not an ERROR message)
	last  *callMessage
	error jsonValue // the body of an ERROR message (the call failed)
}

// runNestStream performs the call and fills r. Every wait ends at deadline.
func runNestStream(addr string, cfg *smux.Config, wire []byte, opts streamOptions, deadline time.Time, r *result) {
	fail := func(format string, a ...interface{}) { r.done(fmt.Errorf(format, a...)) }
	conn, err := net.DialTimeout("tcp", addr, time.Until(deadline))
	if err != nil {
		fail("dial %s: %v", addr, err)
		return
	}
	sess, err := smux.Client(conn, cfg)
	if err != nil {
		conn.Close()
		fail("smux.Client: %v", err)
		return
	}
	defer sess.Close()
	st, err := openStream(sess, time.Until(deadline))
	if err != nil {
		fail("open stream: %v", err)
		return
	}
	_ = st.SetDeadline(deadline)
	// The caller writes first: the REQUEST, whole, in one Write, before either goroutine starts.
	if _, err := st.Write(wire); err != nil {
		abortStream(st)
		fail("stream %d: write the REQUEST: %v", st.ID(), describeWaitError(err, deadline))
		return
	}

	stop := make(chan struct{}) // closed when our writer must stop early
	writerDone := make(chan writerOutcome, 1)
	readerDone := make(chan readerOutcome, 1)
	var progress int64 // replies or bytes received so far (atomic)
	// Each goroutine fills its own fields; they are merged into r once both are done.
	wr, rd := &result{vals: map[string]interface{}{}}, &result{vals: map[string]interface{}{}}
	if opts.mode == "stream" {
		replied := make(chan struct{}, opts.lockstep+1)
		go func() { writerDone <- writeItems(st, opts, replied, stop, &progress) }()
		go func() { readerDone <- readReplies(st, opts, replied, &progress, deadline, rd) }()
	} else {
		go func() { writerDone <- writeRaw(st, opts, stop, &progress, wr) }()
		go func() { readerDone <- readRaw(st, opts, &progress, deadline, rd) }()
	}

	in := <-readerDone
	completed := in.err == nil && in.error == nil
	if in.err != nil {
		abortStream(st) // wakes a writer blocked in Write
	}
	// A client stream is over with the server's LAST, END or not: we stop sending (§5). The directions of a
	// byte stream are independent: a completed one goes on to our END (§6).
	if opts.mode == "stream" || !completed {
		close(stop)
	}
	var out writerOutcome
	select {
	case out = <-writerDone:
	case <-time.After(remaining(deadline)):
		// A writer stuck in Write (no window, no FIN): closing the stream wakes it.
		abortStream(st)
		out = <-writerDone
		if out.err == nil {
			out.err = errors.New("our writer did not finish before the deadline")
		}
	}
	merge(r, rd)
	merge(r, wr)
	if opts.mode == "stream" && completed && out.err != nil {
		// The LAST came while we were writing, and the server's FIN then failed our Write (1.5.16 returns io.EOF
		// for a window-blocked write after a remote FIN): stopping is what §5 asks for.
		log.Printf("neststream: our writer stopped after the server's LAST: %v", out.err)
		out.stopped, out.err = true, nil
	}
	r.set("endSent", out.endSent).set("writerStopped", out.stopped)
	if opts.mode == "stream" {
		r.set("itemsSent", out.items).set("repliesBeforeEnd", out.progress)
	} else {
		r.set("receivedBeforeEnd", out.progress).set("moved", out.bytes+rd.vals["received"].(int64))
	}
	if in.err != nil {
		r.done(in.err)
		return
	}
	r.set("last", true)
	if completed && out.err != nil {
		abortStream(st)
		fail("our direction failed: %v", describeWaitError(out.err, deadline))
		return
	}
	// After its last message the server sends FIN and nothing more (§4, §6). Then ours.
	fin, extraBytes := awaitServerFin(st, deadline)
	r.set("serverFin", fin).set("bytesAfterLast", extraBytes)
	if err := closeStream(st, remaining(deadline)); err != nil {
		log.Printf("neststream: %v (the call itself completed)", err)
	}
	switch {
	case in.error != nil && opts.expectError:
		r.set("ok", true).set("error", in.error)
	case in.error != nil:
		r.set("ok", false).set("error", in.error)
	case opts.expectError:
		fail("expected the call to fail with an ERROR, but it succeeded")
	default:
		r.done(nil)
	}
}

// endMessage is our direction's END, or END + ERROR with the -end-error body.
func endMessage(opts streamOptions) []byte {
	m := callMessage{kind: callKindEnd}
	if opts.endError != nil {
		m.flags, m.encoding, m.body = callFlagError, callEncJSON, opts.endError
	}
	wire, _ := encodeCallMessage(m)
	return wire
}

// writeItems writes the DATA messages, then END. Each of the first -lockstep items waits for its
// reply (signalled on replied) before the next goes out. It stops early once stop closes.
func writeItems(st *smux.Stream, opts streamOptions, replied <-chan struct{}, stop <-chan struct{}, progress *int64) writerOutcome {
	out := writerOutcome{}
	w := &splitWriter{w: st, max: opts.split}
	items := opts.items
	for i := 0; i < items.len(); i++ {
		select {
		case <-stop:
			out.stopped = true
			return out
		default:
		}
		if err := w.write(items.at(i).wire); err != nil {
			out.err = fmt.Errorf("write item %d: %w", i, err)
			return out
		}
		out.items++
		if i < opts.lockstep {
			if err := w.flush(); err != nil {
				out.err = fmt.Errorf("write item %d: %w", i, err)
				return out
			}
			select {
			case <-replied:
			case <-stop:
				out.stopped = true
				return out
			}
		}
	}
	if err := w.write(endMessage(opts)); err != nil {
		out.err = fmt.Errorf("write END: %w", err)
		return out
	}
	if err := w.flush(); err != nil {
		out.err = fmt.Errorf("write END: %w", err)
		return out
	}
	out.endSent = true
	out.progress = atomic.LoadInt64(progress)
	return out
}

// readReplies reads RESPONSE messages until LAST, checking them against the items with -mul, and
// fills the reply fields of r (values, replies, messages, lastValue, status, transport).
func readReplies(st *smux.Stream, opts streamOptions, replied chan<- struct{}, progress *int64, deadline time.Time, r *result) readerOutcome {
	values := []jsonValue{}
	replies, messages := 0, 0
	defer func() {
		r.set("values", values).set("valuesTruncated", replies > len(values)).set("replies", replies).set("messages", messages)
	}()
	for {
		m, err := readCallMessage(st, opts.maxMsg)
		if err != nil {
			if errors.Is(err, io.EOF) || errors.Is(err, errTruncatedMessage) {
				return readerOutcome{err: fmt.Errorf("the stream ended before the call completed (%v, after %d messages)", err, messages)}
			}
			return readerOutcome{err: fmt.Errorf("waiting for the reply (after %d messages): %v", messages, describeWaitError(err, deadline))}
		}
		messages++
		if m.kind != callKindResponse {
			return readerOutcome{err: fmt.Errorf("protocol: the server sent message kind %d on a streamed call, expected RESPONSE", m.kind)}
		}
		if m.flags&callFlagStatus != 0 {
			r.set("status", m.status)
		}
		if m.flags&callFlagError != 0 {
			r.set("transport", m.flags&callFlagTransport != 0)
			body := m.bodyJSON()
			if body == nil {
				body = jsonValue(`null`)
			}
			if m.flags&callFlagLast == 0 {
				return readerOutcome{err: errors.New("protocol: an ERROR response without LAST")}
			}
			return readerOutcome{last: m, error: body}
		}
		last := m.flags&callFlagLast != 0
		if v := m.bodyJSON(); v != nil {
			if opts.mul != 0 {
				if err := checkReply(opts, replies, m, v); err != nil {
					return readerOutcome{err: err}
				}
			}
			replies++
			atomic.StoreInt64(progress, int64(replies))
			if replies <= maxReportedValues {
				values = append(values, v)
			}
			if replies <= opts.lockstep {
				replied <- struct{}{} // buffered for every lockstep reply: never blocks
			}
		}
		if last {
			r.set("lastValue", m.encoding != callEncNone)
			if opts.mul != 0 && replies != opts.items.len() {
				return readerOutcome{err: fmt.Errorf("LAST after %d replies, expected one per item (%d)", replies, opts.items.len())}
			}
			return readerOutcome{last: m}
		}
	}
}

// checkReply checks reply i: a JSON number equal to item i times -mul.
func checkReply(opts streamOptions, i int, m *callMessage, v jsonValue) error {
	if i >= opts.items.len() {
		return fmt.Errorf("reply %d (%s) is more than one per item (%d items)", i, v, opts.items.len())
	}
	item := opts.items.at(i)
	var got float64
	if !item.isNumber {
		return fmt.Errorf("-mul needs numeric items; item %d is not a JSON number", i)
	}
	if m.encoding != callEncJSON || json.Unmarshal(m.body, &got) != nil {
		return fmt.Errorf("reply %d is %s, expected the number %v", i, v, item.number*opts.mul)
	}
	if got != item.number*opts.mul {
		return fmt.Errorf("reply %d is %v, expected %v (item %v × %v)", i, got, item.number*opts.mul, item.number, opts.mul)
	}
	return nil
}

// writeRaw uploads -bytes pseudo-random bytes as RAW messages of random size 1..-chunk, then END;
// it sets sent and sentSha256 on r. It stops early once stop closes.
func writeRaw(st *smux.Stream, opts streamOptions, stop <-chan struct{}, progress *int64, r *result) writerOutcome {
	out := writerOutcome{}
	h := sha256.New()
	defer func() { r.set("sent", out.bytes).set("sentSha256", hex.EncodeToString(h.Sum(nil))) }()
	buf := make([]byte, callPrefixLen+opts.rawChunk)
	buf[0], buf[1] = callKindRaw, callEncBytes
	for out.bytes < opts.rawBytes {
		select {
		case <-stop:
			out.stopped = true
			return out
		default:
		}
		size := randSize(opts.rawChunk)
		if rest := opts.rawBytes - out.bytes; int64(size) > rest {
			size = int(rest)
		}
		body := randBytes(size)
		h.Write(body)
		binary.LittleEndian.PutUint32(buf[4:8], uint32(size))
		copy(buf[callPrefixLen:], body)
		// 1.5.16's Write returns only once its frames are written: buf can be reused at once.
		if _, err := st.Write(buf[:callPrefixLen+size]); err != nil {
			out.err = fmt.Errorf("write after %d of %d bytes: %w", out.bytes, opts.rawBytes, err)
			return out
		}
		out.bytes += int64(size)
	}
	if _, err := st.Write(endMessage(opts)); err != nil {
		out.err = fmt.Errorf("write END: %w", err)
		return out
	}
	out.endSent = true
	out.progress = atomic.LoadInt64(progress)
	return out
}

// readRaw reads the server's direction of a byte stream: RAW messages until END + LAST, or an
// ERROR (RESPONSE + ERROR + LAST before or instead of the handler's bytes; END + ERROR). It sets
// received, receivedSha256, rawMessages, endFlags and (with -download) trailer on r.
func readRaw(st *smux.Stream, opts streamOptions, progress *int64, deadline time.Time, r *result) readerOutcome {
	h := sha256.New()
	var trailer bytes.Buffer
	var received int64
	messages := 0
	defer func() {
		r.set("received", received).set("receivedSha256", hex.EncodeToString(h.Sum(nil))).set("rawMessages", messages)
		if opts.download >= 0 {
			r.set("trailer", trailer.String())
		}
	}()
	for {
		m, err := readCallMessage(st, opts.maxMsg)
		if err != nil {
			if errors.Is(err, io.EOF) || errors.Is(err, errTruncatedMessage) {
				return readerOutcome{err: fmt.Errorf("the stream ended before the byte stream completed (%v, after %d bytes)", err, received)}
			}
			return readerOutcome{err: fmt.Errorf("reading the byte stream (after %d bytes): %v", received, describeWaitError(err, deadline))}
		}
		switch {
		case m.kind == callKindRaw:
			if m.encoding != callEncBytes || m.flags != 0 {
				return readerOutcome{err: fmt.Errorf("protocol: a RAW message with encoding %d and flags 0x%x (§6: raw bytes, no fields)", m.encoding, m.flags)}
			}
			messages++
			body := m.body
			if opts.download >= 0 {
				if data := opts.download - received; data < int64(len(body)) {
					if data < 0 {
						data = 0
					}
					if trailer.Len()+len(body)-int(data) > maxTrailer {
						return readerOutcome{err: fmt.Errorf("more than %d bytes after the %d bytes of data", maxTrailer, opts.download)}
					}
					trailer.Write(body[data:])
					h.Write(body[:data])
					received += data
					continue
				}
			}
			h.Write(body)
			received += int64(len(body))
			atomic.StoreInt64(progress, received)
		case m.flags&callFlagError != 0 && (m.kind == callKindEnd || m.kind == callKindResponse):
			r.set("endFlags", m.flags).set("errorKind", m.kind).set("transport", m.flags&callFlagTransport != 0)
			if m.flags&callFlagStatus != 0 {
				r.set("status", m.status)
			}
			body := m.bodyJSON()
			if body == nil {
				body = jsonValue(`null`)
			}
			if m.flags&callFlagLast == 0 {
				return readerOutcome{err: fmt.Errorf("protocol: an ERROR (kind %d) without LAST", m.kind)}
			}
			return readerOutcome{last: m, error: body}
		case m.kind == callKindEnd:
			r.set("endFlags", m.flags)
			if m.flags&callFlagLast == 0 {
				return readerOutcome{err: errors.New("protocol: the server's END without LAST (§6: END + LAST completes the call)")}
			}
			return readerOutcome{last: m}
		default:
			return readerOutcome{err: fmt.Errorf("protocol: message kind %d (flags 0x%x) in a byte stream", m.kind, m.flags)}
		}
	}
}

// merge copies the fields src collected into dst, in src's order.
func merge(dst, src *result) {
	for _, k := range src.keys {
		dst.set(k, src.vals[k])
	}
}
