package main

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"time"

	"github.com/xtaci/smux"
)

// commonFlags are the session settings every sub-command accepts. The defaults are Go smux's own
// defaults (smux.DefaultConfig), so a flag left out means "whatever an untuned Go peer would do".
type commonFlags struct {
	version     int
	kaiMs       int
	katMs       int
	noKeepAlive bool
	maxFrame    int
	recvBuf     int
	streamBuf   int
	timeoutMs   int
}

// newFlagSet creates the flag set of one sub-command with the common flags registered on it.
// ContinueOnError lets a bad command line end in a clean exit status 2 instead of a panic.
func newFlagSet(name string) (*flag.FlagSet, *commonFlags) {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(os.Stderr)
	c := &commonFlags{}
	fs.IntVar(&c.version, "v", 1, "smux protocol version (1 or 2); both ends must agree")
	fs.IntVar(&c.kaiMs, "kai", 10000, "keep-alive interval in ms (NOP period)")
	fs.IntVar(&c.katMs, "kat", 30000, "keep-alive timeout in ms (dead-peer check period)")
	fs.BoolVar(&c.noKeepAlive, "nokeepalive", false, "disable keep-alive (no NOPs, no dead-peer check)")
	fs.IntVar(&c.maxFrame, "maxframe", 32768, "MaxFrameSize: largest PSH payload we send")
	fs.IntVar(&c.recvBuf, "recvbuf", 4194304, "MaxReceiveBuffer: session token bucket in bytes")
	fs.IntVar(&c.streamBuf, "streambuf", 65536, "MaxStreamBuffer: v2 per-stream window in bytes")
	fs.IntVar(&c.timeoutMs, "timeout", 0, "bound on every wait in ms (0 = the sub-command's default)")
	return fs, c
}

// parseFlags parses args and rejects stray positional arguments, which almost always mean a typo
// such as a flag written after a bare word (the flag package stops at the first non-flag).
func parseFlags(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		// The flag package has already reported its own errors; report ours the same way.
		err := fmt.Errorf("%s: unexpected arguments %q (flags must come before any other word)", fs.Name(), fs.Args())
		fmt.Fprintln(fs.Output(), err)
		return err
	}
	return nil
}

// smuxConfig builds the session config and validates it exactly as smux.Server/Client would, so
// a bad combination is reported before any socket is opened.
func (c *commonFlags) smuxConfig() (*smux.Config, error) {
	cfg := &smux.Config{
		Version:           c.version,
		KeepAliveDisabled: c.noKeepAlive,
		KeepAliveInterval: time.Duration(c.kaiMs) * time.Millisecond,
		KeepAliveTimeout:  time.Duration(c.katMs) * time.Millisecond,
		MaxFrameSize:      c.maxFrame,
		MaxReceiveBuffer:  c.recvBuf,
		MaxStreamBuffer:   c.streamBuf,
	}
	// VerifyConfig only rejects an interval of exactly zero; a negative one passes and then panics
	// inside time.NewTicker, so catch it here.
	if !c.noKeepAlive && (c.kaiMs < 0 || c.katMs < 0) {
		return nil, errors.New("keep-alive interval and timeout must be positive")
	}
	if err := smux.VerifyConfig(cfg); err != nil {
		return nil, fmt.Errorf("invalid smux config: %w", err)
	}
	return cfg, nil
}

// timeout returns the -timeout value, or def when the flag was left at 0.
func (c *commonFlags) timeout(def time.Duration) time.Duration {
	if c.timeoutMs > 0 {
		return time.Duration(c.timeoutMs) * time.Millisecond
	}
	return def
}
