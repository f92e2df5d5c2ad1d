package main

import (
	"encoding/json"
	"fmt"
	"log"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/xtaci/smux"
)

// The `nestworker` sub-command: the dialling side of docs/PROTOCOL.md §11 in Go — what a Go service behind NAT
// does to serve a NestJS gateway. It dials a ServerSmux, says hello naming the `calls` feature, makes one call of
// its own on the same session (pattern -register, data the JSON string -id), then serves the calls the server
// opens: `go.double` answers its JSON number doubled; any other pattern an ERROR response. After -serve calls it
// prints
//
//	RESULT {"scenario":"nestworker","ok":…,"registered":<the register reply>,"served":n,"errors":m,…}
//
// and exits. Every wait is bounded by -wait; the watchdog is the backstop.

const (
	callKindHelloW    = callKindHello
	callFeatureCalls  = "calls"
	nestWorkerMaxBody = 1 << 20
)

func cmdNestWorker(args []string) int {
	fs, common := newFlagSet("nestworker")
	addr := fs.String("addr", "", "ServerSmux address host:port (required)")
	id := fs.String("id", "go-1", "this worker's id, sent with the register call")
	register := fs.String("register", "register", "pattern of the register call")
	serve := fs.Int("serve", 1, "calls to serve before exiting")
	waitMs := fs.Int("wait", 10000, "bound on the whole run in ms")
	if err := parseFlags(fs, args); err != nil {
		return 2
	}
	if *addr == "" {
		log.Printf("nestworker: need -addr")
		return 2
	}
	cfg, err := common.smuxConfig()
	if err != nil {
		log.Printf("nestworker: %v", err)
		return 2
	}
	wait := time.Duration(*waitMs) * time.Millisecond
	startWatchdog(wait+watchdogSlack, "nestworker", nil)
	r := newResult("nestworker")
	start := time.Now()
	runNestWorker(*addr, cfg, *id, *register, *serve, time.Now().Add(wait), r)
	r.set("ms", msSince(start))
	finish(r)
	return 0 // not reached: finish exits
}

func runNestWorker(addr string, cfg *smux.Config, id, register string, serve int, deadline time.Time, r *result) {
	fail := func(format string, a ...interface{}) { r.done(fmt.Errorf(format, a...)) }
	sess, err := dialClient(addr, cfg, deadline)
	if err != nil {
		fail("%v", err)
		return
	}
	defer sess.Close()

	// The hello names `calls`: the server may then open streams to us (and only then).
	ctl, err := openStream(sess, time.Until(deadline))
	if err != nil {
		fail("open the control stream: %v", err)
		return
	}
	defer ctl.Close()
	_ = ctl.SetDeadline(deadline)
	hello, _ := json.Marshal(map[string]interface{}{"protocol": 1, "features": []string{callFeatureCalls}})
	wire, _ := encodeCallMessage(callMessage{kind: callKindHelloW, encoding: callEncJSON, body: hello})
	if _, err := ctl.Write(wire); err != nil {
		fail("write HELLO: %v", err)
		return
	}
	answer, err := readCallMessage(ctl, nestWorkerMaxBody)
	if err != nil || answer.kind != callKindHelloW {
		fail("the server did not answer HELLO with HELLO: %v", err)
		return
	}
	_ = ctl.SetDeadline(time.Time{})

	// Our own call, on the same session: who we are.
	data, _ := json.Marshal(id)
	request, _ := encodeCallMessage(callMessage{
		kind: callKindRequest, encoding: callEncJSON, flags: callFlagID | callFlagPattern, id: "1", pattern: register, body: data,
	})
	st, err := openStream(sess, time.Until(deadline))
	if err != nil {
		fail("open the register stream: %v", err)
		return
	}
	_ = st.SetDeadline(deadline)
	if _, err := st.Write(request); err != nil {
		fail("write the register call: %v", err)
		return
	}
	for {
		m, err := readCallMessage(st, nestWorkerMaxBody)
		if err != nil {
			fail("read the register reply: %v", err)
			return
		}
		if m.flags&callFlagLast != 0 {
			if m.flags&callFlagError != 0 {
				fail("the register call failed: %s", m.bodyJSON())
				return
			}
			r.set("registered", m.bodyJSON())
			break
		}
	}
	st.Close()

	// Serve: every stream the server opens is a call to us.
	var served, failed int64
	done := make(chan struct{})
	var doneOnce int32
	sess.SetDeadline(deadline)
	go func() {
		for {
			call, err := sess.AcceptStream()
			if err != nil {
				return
			}
			go func() {
				if answerCall(call, deadline) {
					atomic.AddInt64(&served, 1)
				} else {
					atomic.AddInt64(&failed, 1)
				}
				if atomic.LoadInt64(&served)+atomic.LoadInt64(&failed) >= int64(serve) && atomic.CompareAndSwapInt32(&doneOnce, 0, 1) {
					close(done)
				}
			}()
		}
	}()
	select {
	case <-done:
	case <-time.After(time.Until(deadline)):
	}
	r.set("served", atomic.LoadInt64(&served)).set("errors", atomic.LoadInt64(&failed))
	if atomic.LoadInt64(&served)+atomic.LoadInt64(&failed) < int64(serve) {
		fail("served %d of %d calls before the deadline", served+failed, serve)
		return
	}
	r.done(nil)
}

// answerCall reads one REQUEST and answers it (§4 with the roles swapped): `go.double` with its number doubled,
// anything else with an ERROR response. Reports whether the call was answered with a value.
func answerCall(st *smux.Stream, deadline time.Time) bool {
	defer st.Close()
	_ = st.SetDeadline(deadline)
	m, err := readCallMessage(st, nestWorkerMaxBody)
	if err != nil || m.kind != callKindRequest {
		return false
	}
	var reply callMessage
	ok := false
	if n, err := strconv.ParseFloat(string(m.bodyJSON()), 64); m.pattern == "go.double" && err == nil {
		body, _ := json.Marshal(n * 2)
		reply = callMessage{kind: callKindResponse, encoding: callEncJSON, flags: callFlagLast, body: body}
		ok = true
	} else {
		body, _ := json.Marshal(map[string]string{"code": "NO_SUCH_PATTERN", "pattern": m.pattern})
		reply = callMessage{kind: callKindResponse, encoding: callEncJSON, flags: callFlagLast | callFlagError, body: body}
	}
	wire, _ := encodeCallMessage(reply)
	if _, err := st.Write(wire); err != nil {
		return false
	}
	return ok
}
