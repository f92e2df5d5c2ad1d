package main

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"math"
	"net"
	"strings"
	"time"

	"github.com/xtaci/smux"
)

// The `nestcall` sub-command: a Go caller of the nestjs-smux call protocol (docs/PROTOCOL.md), the
// way a Go service would call a NestJS microservice running ServerSmux. It dials, runs smux.Client,
// opens one stream, writes one REQUEST (or EVENT) message in one Write, reads messages until one
// carries LAST, closes the stream and prints
//
//	RESULT {"scenario":"nestcall","ok":…,"values":[…],"error":…,"status":…,…}
//
// `values` holds the body of every RESPONSE without ERROR, in order; `error` the body of an ERROR
// response (a JSON value) or, for a failure of the transport, a text; `status` Nest's status field.
// Bodies are shown as JSON: a JSON body as is, a UTF-8 string body as a JSON string, raw bytes as
// {"$bytes":"<hex>"}; a message without a value adds nothing to `values`.
//
// Every wait (dial, open, write, each read, close) is bounded by one deadline, -wait, so the program
// never hangs on a server that refuses or never answers; the watchdog is the backstop.

// Call message kinds, encodings and flags (docs/PROTOCOL.md §2, §3).
const (
	callKindRequest  byte = 1
	callKindEvent    byte = 2
	callKindResponse byte = 3
	callKindRaw      byte = 6
	callKindHello    byte = 7

	callEncNone   byte = 0
	callEncJSON   byte = 1
	callEncBytes  byte = 2
	callEncString byte = 3

	callFlagLast        uint16 = 1 << 0
	callFlagError       uint16 = 1 << 1
	callFlagOpaque      uint16 = 1 << 2
	callFlagID          uint16 = 1 << 3
	callFlagPattern     uint16 = 1 << 4
	callFlagPatternJSON uint16 = 1 << 5
	callFlagTimeout     uint16 = 1 << 6
	callFlagHeaders     uint16 = 1 << 7
	callFlagStatus      uint16 = 1 << 8
	callFlagTransport   uint16 = 1 << 9
	callFlagStream      uint16 = 1 << 10
	callFlagRaw         uint16 = 1 << 11
	callFlagFeed        uint16 = 1 << 12
	callKnownFlags      uint16 = 1<<13 - 1

	callPrefixLen = 8
)

// callMessage is one call message: the prefix, the fields the flags announce, and the body.
type callMessage struct {
	kind      byte
	encoding  byte
	flags     uint16
	id        string
	pattern   string
	timeout   uint32
	headers   []byte // JSON object text
	status    string
	seq       float64 // FEED
	timestamp float64
	body      []byte
}

// encodeCallMessage lays m out as docs/PROTOCOL.md §2 says: kind, encoding, flags (u16 LE), length
// (u32 LE), then ID (u8 length), PATTERN (u16 length), TIMEOUT (u32), HEADERS (u16 length), STATUS
// (u8 length), in this order and only when their flag is set, then the body.
func encodeCallMessage(m callMessage) ([]byte, error) {
	var rest bytes.Buffer
	short := func(name, v string, max int) error {
		if len(v) > max {
			return fmt.Errorf("%s is %d bytes, more than %d", name, len(v), max)
		}
		return nil
	}
	if m.flags&callFlagID != 0 {
		if err := short("id", m.id, 0xff); err != nil {
			return nil, err
		}
		rest.WriteByte(byte(len(m.id)))
		rest.WriteString(m.id)
	}
	if m.flags&callFlagPattern != 0 {
		if err := short("pattern", m.pattern, 0xffff); err != nil {
			return nil, err
		}
		binary.Write(&rest, binary.LittleEndian, uint16(len(m.pattern)))
		rest.WriteString(m.pattern)
	}
	if m.flags&callFlagTimeout != 0 {
		binary.Write(&rest, binary.LittleEndian, m.timeout)
	}
	if m.flags&callFlagHeaders != 0 {
		if err := short("headers", string(m.headers), 0xffff); err != nil {
			return nil, err
		}
		binary.Write(&rest, binary.LittleEndian, uint16(len(m.headers)))
		rest.Write(m.headers)
	}
	if m.flags&callFlagStatus != 0 {
		if err := short("status", m.status, 0xff); err != nil {
			return nil, err
		}
		rest.WriteByte(byte(len(m.status)))
		rest.WriteString(m.status)
	}
	rest.Write(m.body)
	out := make([]byte, callPrefixLen, callPrefixLen+rest.Len())
	out[0], out[1] = m.kind, m.encoding
	binary.LittleEndian.PutUint16(out[2:4], m.flags)
	binary.LittleEndian.PutUint32(out[4:8], uint32(rest.Len()))
	return append(out, rest.Bytes()...), nil
}

// errTruncatedMessage: the stream ended (FIN) inside a message.
var errTruncatedMessage = errors.New("the stream ended in the middle of a message")

// readCallMessage reads one whole message: its 8-byte prefix, then exactly `length` more bytes,
// however the bytes were cut into frames. It returns io.EOF only for a clean end between messages.
func readCallMessage(r io.Reader, maxLength uint32) (*callMessage, error) {
	var prefix [callPrefixLen]byte
	if _, err := io.ReadFull(r, prefix[:]); err != nil {
		if errors.Is(err, io.ErrUnexpectedEOF) {
			return nil, errTruncatedMessage
		}
		return nil, err
	}
	length := binary.LittleEndian.Uint32(prefix[4:8])
	if length > maxLength {
		return nil, fmt.Errorf("a message of %d bytes exceeds our limit of %d bytes", length, maxLength)
	}
	rest := make([]byte, length)
	if _, err := io.ReadFull(r, rest); err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return nil, errTruncatedMessage
		}
		return nil, err
	}
	return parseCallMessage(prefix, rest)
}

// parseCallMessage decodes the fields and checks what a receiver must reject (§2): an unknown kind,
// unknown flag bits, an unknown encoding, a body with encoding none, a truncated field.
func parseCallMessage(prefix [callPrefixLen]byte, rest []byte) (*callMessage, error) {
	m := &callMessage{kind: prefix[0], encoding: prefix[1], flags: binary.LittleEndian.Uint16(prefix[2:4])}
	if m.kind < callKindRequest || m.kind > callKindHello {
		return nil, fmt.Errorf("malformed message: unknown kind %d", m.kind)
	}
	if m.flags&^callKnownFlags != 0 {
		return nil, fmt.Errorf("malformed message: unknown flag bits 0x%x", m.flags)
	}
	at := 0
	field := func(name string, lengthBytes int) ([]byte, error) {
		if at+lengthBytes > len(rest) {
			return nil, fmt.Errorf("malformed message: truncated %s field", name)
		}
		n := int(rest[at])
		if lengthBytes == 2 {
			n = int(binary.LittleEndian.Uint16(rest[at:]))
		}
		at += lengthBytes
		if at+n > len(rest) {
			return nil, fmt.Errorf("malformed message: truncated %s field", name)
		}
		v := rest[at : at+n]
		at += n
		return v, nil
	}
	if m.flags&callFlagID != 0 {
		v, err := field("ID", 1)
		if err != nil {
			return nil, err
		}
		m.id = string(v)
	}
	if m.flags&callFlagPattern != 0 {
		v, err := field("PATTERN", 2)
		if err != nil {
			return nil, err
		}
		m.pattern = string(v)
	}
	if m.flags&callFlagTimeout != 0 {
		if at+4 > len(rest) {
			return nil, errors.New("malformed message: truncated TIMEOUT field")
		}
		m.timeout = binary.LittleEndian.Uint32(rest[at:])
		at += 4
	}
	if m.flags&callFlagHeaders != 0 {
		v, err := field("HEADERS", 2)
		if err != nil {
			return nil, err
		}
		m.headers = v
	}
	if m.flags&callFlagStatus != 0 {
		v, err := field("STATUS", 1)
		if err != nil {
			return nil, err
		}
		m.status = string(v)
	}
	if m.flags&callFlagFeed != 0 {
		if at+16 > len(rest) {
			return nil, errors.New("malformed message: truncated FEED field")
		}
		m.seq = math.Float64frombits(binary.LittleEndian.Uint64(rest[at:]))
		m.timestamp = math.Float64frombits(binary.LittleEndian.Uint64(rest[at+8:]))
		at += 16
	}
	m.body = rest[at:]
	switch m.encoding {
	case callEncNone:
		if len(m.body) != 0 {
			return nil, errors.New(`malformed message: a body with encoding "none"`)
		}
	case callEncJSON:
		if !json.Valid(m.body) {
			return nil, errors.New("malformed message: invalid JSON body")
		}
	case callEncBytes, callEncString:
	default:
		return nil, fmt.Errorf("malformed message: unknown body encoding %d", m.encoding)
	}
	return m, nil
}

// jsonValue is JSON text that goes into the RESULT line as is, and reads as itself in a log line.
type jsonValue []byte

// MarshalJSON returns the text itself.
func (j jsonValue) MarshalJSON() ([]byte, error) { return j, nil }

// String returns the text.
func (j jsonValue) String() string { return string(j) }

// bodyJSON renders a body for the RESULT line (nil: the message carries no value).
func (m *callMessage) bodyJSON() jsonValue {
	var v []byte
	switch m.encoding {
	case callEncNone:
		return nil
	case callEncJSON:
		v = m.body
	case callEncString:
		v, _ = json.Marshal(string(m.body))
	case callEncBytes:
		v, _ = json.Marshal(map[string]string{"$bytes": hex.EncodeToString(m.body)})
	}
	return jsonValue(v)
}

func cmdNestCall(args []string) int {
	fs, common := newFlagSet("nestcall")
	// The common -timeout is the call's TIMEOUT field here (the deadline budget the server enforces);
	// the bound on our own waits is -wait, so the server's ERR_SMUX_TIMEOUT can arrive before we give up.
	fs.Lookup("timeout").Usage = "the call's TIMEOUT field in ms: the server cancels the handler after it (0 = none)"
	addr := fs.String("addr", "", "server address host:port (required)")
	pattern := fs.String("pattern", "", `pattern: a string, or a JSON object such as {"cmd":"sum"} (then sent with PATTERN_JSON)`)
	data := fs.String("data", "", "the request/event data as JSON text (empty: no value, encoding none)")
	headers := fs.String("headers", "", `headers (Nest metadata): a JSON object of string values, e.g. {"a":"1"}`)
	id := fs.String("id", "1", "packet id (ID field of a REQUEST)")
	event := fs.Bool("event", false, "send an EVENT and FIN instead of a REQUEST; ok once written")
	expectError := fs.Bool("expect-error", false, "succeed (exit 0) only when the call ends with an ERROR response")
	waitMs := fs.Int("wait", 0, "bound on every wait in ms (default 10000, plus -timeout when set)")
	maxMsg := fs.Int("max-message", 64<<20, "largest message length accepted from the server")
	extraFlags := fs.Uint("extra-flags", 0, "flag bits ORed into the message as sent (tests: 8192 is an unknown bit)")
	hello := fs.Bool("hello", false, "exchange HELLOs on a control stream first, as ClientSmux does (§3)")
	if err := parseFlags(fs, args); err != nil {
		return 2
	}
	if *addr == "" || *pattern == "" {
		log.Printf("nestcall: need -addr and -pattern")
		return 2
	}
	cfg, err := common.smuxConfig()
	if err != nil {
		log.Printf("nestcall: %v", err)
		return 2
	}
	msg, err := buildCallMessage(*event, *id, *pattern, *data, *headers, common.timeoutMs)
	if err != nil {
		log.Printf("nestcall: %v", err)
		return 2
	}
	wire, err := encodeCallMessage(msg)
	if err != nil {
		log.Printf("nestcall: %v", err)
		return 2
	}
	if *extraFlags != 0 {
		// After encoding: the bits change only the flags word, not the fields laid out.
		binary.LittleEndian.PutUint16(wire[2:4], msg.flags|uint16(*extraFlags))
	}
	wait := time.Duration(*waitMs) * time.Millisecond
	if wait <= 0 {
		wait = 10*time.Second + time.Duration(common.timeoutMs)*time.Millisecond
	}
	extra := func(r *result) { r.set("version", cfg.Version).set("sent", hex.EncodeToString(wire)) }
	startWatchdog(wait+watchdogSlack, "nestcall", extra)
	r := newResult("nestcall").set("values", []jsonValue{}).set("status", "")
	extra(r)
	start := time.Now()
	runNestCall(*addr, cfg, wire, *event, *expectError, *hello, uint32(*maxMsg), time.Now().Add(wait), r)
	r.set("ms", msSince(start))
	finish(r)
	return 0 // not reached: finish exits
}

// buildCallMessage turns the flags into a REQUEST or EVENT, checking the JSON texts first.
func buildCallMessage(event bool, id, pattern, data, headers string, timeoutMs int) (callMessage, error) {
	m := callMessage{kind: callKindRequest, flags: callFlagPattern, pattern: pattern}
	if event {
		m.kind = callKindEvent
	} else {
		m.flags |= callFlagID
		m.id = id
		if timeoutMs > 0 {
			m.flags |= callFlagTimeout
			m.timeout = uint32(timeoutMs)
		}
	}
	// An object pattern travels as its JSON text with PATTERN_JSON (what ClientSmux does for {cmd: …}).
	if strings.HasPrefix(strings.TrimSpace(pattern), "{") {
		var obj map[string]interface{}
		if err := json.Unmarshal([]byte(pattern), &obj); err != nil {
			return m, fmt.Errorf("-pattern looks like a JSON object but is not valid JSON: %w", err)
		}
		var compact bytes.Buffer
		_ = json.Compact(&compact, []byte(pattern))
		m.pattern = compact.String()
		m.flags |= callFlagPatternJSON
	}
	if headers != "" {
		var h map[string]string
		if err := json.Unmarshal([]byte(headers), &h); err != nil || h == nil {
			return m, fmt.Errorf("-headers must be a JSON object of string values, got %q", headers)
		}
		var compact bytes.Buffer
		_ = json.Compact(&compact, []byte(headers))
		m.flags |= callFlagHeaders
		m.headers = compact.Bytes()
	}
	if data != "" {
		if !json.Valid([]byte(data)) {
			return m, fmt.Errorf("-data is not valid JSON: %q", data)
		}
		var compact bytes.Buffer
		_ = json.Compact(&compact, []byte(data))
		m.encoding = callEncJSON
		m.body = compact.Bytes()
	}
	return m, nil
}

// runNestCall performs the call and fills r. Every wait ends at deadline.
func runNestCall(addr string, cfg *smux.Config, wire []byte, event, expectError, hello bool, maxMsg uint32, deadline time.Time, r *result) {
	fail := func(format string, a ...interface{}) { r.done(fmt.Errorf(format, a...)) }
	sess, err := dialClient(addr, cfg, deadline)
	if err != nil {
		fail("%v", err)
		return
	}
	// Closing the session closes the connection; anything still blocked in smux wakes up.
	defer sess.Close()
	if hello {
		// The control stream stays open for the session's life; the server answers HELLO at once.
		ctl, answer, err := exchangeHello(sess, maxMsg, deadline)
		if err != nil {
			fail("hello: %v", err)
			return
		}
		defer ctl.Close()
		r.set("hello", answer.bodyJSON())
		if answer.kind != callKindHello {
			r.set("error", answer.bodyJSON()).set("transport", answer.flags&callFlagTransport != 0)
			if expectError && answer.flags&callFlagError != 0 {
				r.set("ok", true)
			} else {
				r.set("ok", false)
			}
			return
		}
	}
	st, err := openStream(sess, time.Until(deadline))
	if err != nil {
		fail("open stream: %v", err)
		return
	}
	_ = st.SetDeadline(deadline)
	// The caller always writes first, and the whole message goes in one Write (§7).
	if _, err := st.Write(wire); err != nil {
		abortStream(st)
		fail("stream %d: write %d-byte message: %v", st.ID(), len(wire), describeWaitError(err, deadline))
		return
	}
	if event {
		// At most once: the event counts as delivered once it and our FIN are written.
		if err := closeStream(st, remaining(deadline)); err != nil {
			fail("%v", err)
			return
		}
		r.done(nil)
		return
	}

	values := []jsonValue{}
	var errBody jsonValue
	messages := 0
	for {
		m, err := readCallMessage(st, maxMsg)
		if err != nil {
			abortStream(st)
			r.set("values", values).set("messages", messages)
			switch {
			case errors.Is(err, io.EOF), errors.Is(err, errTruncatedMessage):
				fail("the stream ended before the call completed (%v, after %d messages)", err, messages)
			default:
				fail("waiting for the reply (after %d messages): %v", messages, describeWaitError(err, deadline))
			}
			return
		}
		messages++
		if m.kind != callKindResponse {
			abortStream(st)
			fail("protocol: the server sent message kind %d, expected RESPONSE (%d)", m.kind, callKindResponse)
			return
		}
		if m.flags&callFlagStatus != 0 {
			r.set("status", m.status)
		}
		if m.flags&callFlagOpaque != 0 {
			r.set("opaque", true)
		}
		if m.flags&callFlagError != 0 {
			r.set("transport", m.flags&callFlagTransport != 0)
			errBody = m.bodyJSON()
			if errBody == nil {
				errBody = jsonValue(`null`)
			}
		} else if v := m.bodyJSON(); v != nil {
			values = append(values, v)
		}
		if m.flags&callFlagLast != 0 {
			break
		}
		if errBody != nil {
			abortStream(st)
			fail("protocol: an ERROR response without LAST")
			return
		}
	}
	r.set("values", values).set("messages", messages).set("last", true)
	// §4: after LAST the server sends FIN and nothing more. Wait for it briefly (not an error if it is
	// late: the call is complete), then send ours.
	fin, extraBytes := awaitServerFin(st, deadline)
	r.set("serverFin", fin).set("bytesAfterLast", extraBytes)
	// Our FIN ends the call on the server's side too (it waits finTimeout for it otherwise).
	if err := closeStream(st, remaining(deadline)); err != nil {
		log.Printf("nestcall: %v (the call itself completed)", err)
	}
	switch {
	case errBody != nil && expectError:
		r.set("ok", true).set("error", errBody)
	case errBody != nil:
		r.set("ok", false).set("error", errBody)
	case expectError:
		fail("expected the call to fail with an ERROR response, but it succeeded")
	default:
		r.done(nil)
	}
}

// dialClient connects to addr and starts smux's client side on it, both bounded by deadline's time left.
func dialClient(addr string, cfg *smux.Config, deadline time.Time) (*smux.Session, error) {
	conn, err := net.DialTimeout("tcp", addr, time.Until(deadline))
	if err != nil {
		return nil, fmt.Errorf("dial %s: %v", addr, err)
	}
	sess, err := smux.Client(conn, cfg)
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("smux.Client: %v", err)
	}
	return sess, nil
}

// exchangeHello opens the control stream, writes HELLO {"protocol":1} and reads the server's answer: a
// HELLO, or a transport error (RESPONSE + ERROR + TRANSPORT) when the server refuses the connection.
func exchangeHello(sess *smux.Session, maxMsg uint32, deadline time.Time) (*smux.Stream, *callMessage, error) {
	st, err := openStream(sess, time.Until(deadline))
	if err != nil {
		return nil, nil, fmt.Errorf("open the control stream: %v", err)
	}
	_ = st.SetDeadline(deadline)
	wire, _ := encodeCallMessage(callMessage{kind: callKindHello, encoding: callEncJSON, body: []byte(`{"protocol":1}`)})
	if _, err := st.Write(wire); err != nil {
		abortStream(st)
		return nil, nil, fmt.Errorf("write HELLO: %v", describeWaitError(err, deadline))
	}
	m, err := readCallMessage(st, maxMsg)
	if err != nil {
		abortStream(st)
		return nil, nil, fmt.Errorf("read the answer to HELLO: %v", describeWaitError(err, deadline))
	}
	if m.kind != callKindHello && (m.kind != callKindResponse || m.flags&callFlagTransport == 0) {
		abortStream(st)
		return nil, nil, fmt.Errorf("protocol: the server answered HELLO with kind %d", m.kind)
	}
	_ = st.SetDeadline(time.Time{})
	return st, m, nil
}

// awaitServerFin reads what follows the LAST message until EOF (the server's FIN), for at most 2 s
// and never past deadline. It reports whether EOF came and how many bytes preceded it.
func awaitServerFin(st *smux.Stream, deadline time.Time) (bool, int64) {
	limit := time.Now().Add(2 * time.Second)
	if deadline.Before(limit) {
		limit = deadline
	}
	_ = st.SetReadDeadline(limit)
	n, err := readToEOF(st, 4096, func([]byte, int64) error { return nil })
	return err == nil, n
}

// remaining is the time left until deadline, at least a moment so a FIN can still be tried.
func remaining(deadline time.Time) time.Duration {
	if d := time.Until(deadline); d > 100*time.Millisecond {
		return d
	}
	return 100 * time.Millisecond
}

// describeWaitError names a deadline that passed (smux's bare "timeout") as such.
func describeWaitError(err error, deadline time.Time) error {
	if errors.Is(err, smux.ErrTimeout) || !time.Now().Before(deadline) {
		return fmt.Errorf("no answer before the deadline (%v; raise -wait to wait longer)", err)
	}
	return err
}
