package main

import (
	"math/rand"
)

// Test payloads: random bytes (checked by SHA-256 digests) and the deterministic pattern i % 251
// (checked byte by byte; 251 is prime so the pattern never lines up with frame or buffer sizes).

const (
	randPoolSize = 1 << 20 // largest random chunk we hand out, and the size of the pool behind it
	maxChunk     = 1 << 20 // random write/read sizes are drawn from 1 B .. 1 MiB
)

// randPool is filled once; random data is a slice of it at a random offset. Generating 64 MiB with
// math/rand byte by byte would dominate the run time, and the digests only need the receiver to see
// exactly what the sender sent, not unpredictable content. Slices are only ever read, so sharing
// the pool between goroutines (and with frames smux still has queued) is safe.
var randPool = func() []byte {
	b := make([]byte, randPoolSize)
	rand.Read(b)
	return b
}()

// randBytes returns n (<= randPoolSize) random bytes. The result must not be modified.
func randBytes(n int) []byte {
	off := rand.Intn(randPoolSize - n + 1)
	return randPool[off : off+n : off+n]
}

// randSize returns a size in 1..max.
func randSize(max int) int {
	return 1 + rand.Intn(max)
}

// patternByte is byte i of the WRITECLOSE / FINREPLY pattern.
func patternByte(i int64) byte {
	return byte(i % 251)
}

// fillPattern fills b with the pattern starting at absolute offset off.
func fillPattern(b []byte, off int64) {
	for i := range b {
		b[i] = patternByte(off + int64(i))
	}
}

// checkPattern returns the index in b of the first byte that breaks the pattern at offset off,
// or -1 when all bytes match.
func checkPattern(b []byte, off int64) int {
	for i, c := range b {
		if c != patternByte(off+int64(i)) {
			return i
		}
	}
	return -1
}

// patternBlock holds the pattern from offset 0 for a whole number of periods (251 × 261 = 65511
// bytes, just under 64 KiB). Writing it back to back continues the pattern seamlessly, so the
// writers never have to fill buffers per chunk.
var patternBlock = func() []byte {
	b := make([]byte, 251*261)
	fillPattern(b, 0)
	return b
}()
