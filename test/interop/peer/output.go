package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log"
	"os"
	"sync"
	"time"
)

// stdoutMu keeps concurrent RESULT lines (one per session in serve) from interleaving. os.Stdout is
// unbuffered in Go, so each line reaches the harness as soon as it is written.
var stdoutMu sync.Mutex

// printLine writes one protocol line to stdout.
func printLine(line string) {
	stdoutMu.Lock()
	defer stdoutMu.Unlock()
	if _, err := os.Stdout.WriteString(line + "\n"); err != nil {
		log.Printf("stdout: %v", err)
	}
}

// result is one RESULT line. It keeps keys in insertion order so the lines read naturally
// ("scenario" and "ok" first); the harness parses them as JSON and does not care.
type result struct {
	keys []string
	vals map[string]interface{}
}

// newResult starts a result for scenario with ok=false and an empty error, so a scenario that
// forgets to fill them in reports failure rather than success.
func newResult(scenario string) *result {
	r := &result{vals: map[string]interface{}{}}
	return r.set("scenario", scenario).set("ok", false).set("error", "")
}

// set adds or replaces one field and returns r for chaining.
func (r *result) set(key string, val interface{}) *result {
	if _, seen := r.vals[key]; !seen {
		r.keys = append(r.keys, key)
	}
	r.vals[key] = val
	return r
}

// done records the outcome: ok=true and an empty error when err is nil, else ok=false and err.
func (r *result) done(err error) *result {
	if err != nil {
		return r.set("ok", false).set("error", err.Error())
	}
	return r.set("ok", true).set("error", "")
}

// ok reports the "ok" field.
func (r *result) ok() bool {
	v, _ := r.vals["ok"].(bool)
	return v
}

// String renders "RESULT {...}".
func (r *result) String() string {
	var b bytes.Buffer
	b.WriteString("RESULT {")
	for i, k := range r.keys {
		if i > 0 {
			b.WriteByte(',')
		}
		kj, _ := json.Marshal(k)
		vj, err := json.Marshal(r.vals[k])
		if err != nil {
			vj, _ = json.Marshal(fmt.Sprint(r.vals[k]))
		}
		b.Write(kj)
		b.WriteByte(':')
		b.Write(vj)
	}
	b.WriteByte('}')
	return b.String()
}

// msSince returns the milliseconds elapsed since t, rounded to 0.1 ms.
func msSince(t time.Time) float64 {
	return float64(time.Since(t).Microseconds()/100) / 10
}

// finishOnce guards the single final RESULT of a one-shot sub-command: the scenario and the
// watchdog may both try to finish, and only the first one may print and exit.
var finishOnce sync.Once

// finish prints r (when not nil) and exits: 0 if r is ok, 1 otherwise. A failure also goes to stderr
// so the harness's error message shows it without parsing stdout.
func finish(r *result) {
	finishOnce.Do(func() {
		code := 0
		if r != nil {
			printLine(r.String())
			if !r.ok() {
				code = 1
				log.Printf("%v failed: %v", r.vals["scenario"], r.vals["error"])
			}
		}
		os.Exit(code)
	})
	// Another goroutine is finishing; wait for its os.Exit instead of returning into a scenario
	// whose state may already be torn down.
	select {}
}

// startWatchdog makes sure a one-shot sub-command never hangs: if it is still running after d it
// prints a failing RESULT for scenario and exits 1. Individual waits carry their own (shorter)
// deadlines; this is the backstop for anything that has none, such as Go 1.5.16's FIN write.
func startWatchdog(d time.Duration, scenario string, extra func(r *result)) {
	time.AfterFunc(d, func() {
		r := newResult(scenario).done(fmt.Errorf("watchdog: still running after %v", d))
		if extra != nil {
			extra(r)
		}
		finish(r)
	})
}
