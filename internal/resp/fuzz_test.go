package resp

import (
	"bytes"
	"errors"
	"io"
	"slices"
	"strings"
	"testing"

	"github.com/gomodule/redigo/redis"
	"github.com/stretchr/testify/assert"
)

// The allocation a reply may cost: a constant plus a multiple of the bytes
// received. The constant covers the buffer, a bulk string's first chunk
// given on the word of its header and a long line's growth; the multiple,
// the worst case per byte: "*16\r\n:1\r\n", nested, makes each 9 bytes
// an array of room for 16 elements (256 bytes) plus a stack frame.
const (
	allocBase    = 128 << 10
	allocPerByte = 64
)

// limitReasons are the rejections of replies redigo accepts: limits this
// package documents, and numbers past int64 that redigo wraps around.
var limitReasons = map[string]bool{
	reasonLengthRange: true,
	reasonBulkLen:     true,
	reasonDepth:       true,
	reasonLongLine:    true,
	reasonIntRange:    true,
}

func isLimit(err error) bool {
	var pe *ProtocolError
	return errors.As(err, &pe) && limitReasons[pe.Reason]
}

// sameError reports whether a and b are the same error, or protocol errors
// of the same reason.
func sameError(a, b error) bool {
	var pa, pb *ProtocolError
	if errors.As(a, &pa) && errors.As(b, &pb) {
		return pa.Reason == pb.Reason
	}
	return a == b
}

// readAll reads replies until the first error, io.EOF at a clean end.
func readAll(rd interface{ ReadReply() (any, error) }) ([]any, error) {
	replies := []any{}
	for {
		v, err := rd.ReadReply()
		if err != nil {
			return replies, err
		}
		replies = append(replies, v)
	}
}

// redigoReader reads replies with redigo's connection, an error reply as
// a value, for the oracle.
type redigoReader struct{ c redis.Conn }

func (r redigoReader) ReadReply() (any, error) {
	v, err := r.c.Receive()
	if e, ok := err.(redis.Error); ok {
		return e, nil
	}
	return v, err
}

// declaresMoreThan reports whether any '$' or '*' in data is followed by a
// number larger than n: redigo would allocate that much on its word.
func declaresMoreThan(data []byte, n int) bool {
	for i, b := range data {
		if b != '$' && b != '*' {
			continue
		}
		var v int
		for _, d := range data[i+1:] {
			if d < '0' || d > '9' {
				break
			}
			if v = v*10 + int(d-'0'); v > n {
				return true
			}
		}
	}
	return false
}

func fuzzSeeds() [][]byte {
	var seeds [][]byte
	var all bytes.Buffer
	for _, tc := range validReplies {
		seeds = append(seeds, []byte(tc.in))
		all.WriteString(tc.in)
		// Cut short, in the middle and one byte before the end.
		seeds = append(seeds, []byte(tc.in[:len(tc.in)/2]), []byte(tc.in[:len(tc.in)-1]))
	}
	seeds = append(seeds, all.Bytes())
	for _, s := range []string{
		"HTTP/1.1 400 Bad Request\r\n\r\n",
		"\x15\x03\x01\x00\x02\x02\x16",
		"$2000000000\r\nabc",
		"*2000000000\r\n",
		"*2000000000\r\n:1\r\n",
		"$9223372036854775808\r\n",
		"*18446744073709551617\r\n:1\r\n",
		":99999999999999999999\r\n",
		":-9223372036854775808\r\n",
		"$3\r\nabcde\r\n",
		"*1\r\n_\r\n",
		"+OK\n",
		// Interleaved: a pipeline's replies, the last one cut.
		"+OK\r\n$5\r\nhello\r\n:42\r\n*2\r\n$1\r\na\r\n-ERR x\r\n$10\r\nshort",
		"*2\r\n$3\r\nfoo\r\n*2\r\n+OK\r\n$3\r\nbar\r\n+QUEUED\r\n*-1\r\n",
		// Past the small limits of the second pass: the defaults' are
		// tested by TestReadReplyAllocatesInProportionToBytesReceived.
		strings.Repeat("*1\r\n", 64) + ":1\r\n",
		strings.Repeat("*16\r\n:1\r\n", 64),
		"+" + strings.Repeat("a", 300),
		"$" + strings.Repeat("9", 100),
	} {
		seeds = append(seeds, []byte(s))
	}
	// Large seeds slow every mutation of them, and their minimization most.
	return slices.DeleteFunc(seeds, func(s []byte) bool { return len(s) > maxSeed })
}

const maxSeed = 4 << 10

// FuzzReadReply holds the Reader to three things for any bytes at all: it
// does not panic; it allocates within allocBase plus allocPerByte times
// the input's length; and it agrees with redigo, the oracle: each reply
// redigo reads, it reads to the identical value, and where it rejects what
// redigo reads, the reason is a documented limit.
//
// Allocation is measured as the process's TotalAlloc around the reads:
// every byte counts, boxing and strings included, not only what the
// Reader knows it allocates. It cannot flake under parallel fuzzing:
// each fuzz worker is a process of its own and runs one input at a time,
// and outside fuzzing the fuzz target runs after every test has finished.
func FuzzReadReply(f *testing.F) {
	for _, s := range fuzzSeeds() {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var ours []any
		var err error
		n := allocatedBy(func() {
			ours, err = readAll(NewReader(bytes.NewReader(data)))
		})
		if limit := uint64(allocBase + allocPerByte*len(data)); n > limit {
			t.Fatalf("got %d bytes allocated reading %d, want at most %d", n, len(data), limit)
		}
		var pe *ProtocolError
		if errors.As(err, &pe) && len(pe.Line) > quoteLen {
			t.Fatalf("got a quoted line of %d bytes, want at most %d", len(pe.Line), quoteLen)
		}

		// Tighter limits only ever turn a reply into a limit error.
		small, smallErr := readAll(NewReader(bytes.NewReader(data), MaxDepth(3), MaxLineLen(16), MaxBulkLen(8)))
		if len(small) > len(ours) || !assert.Equal(t, ours[:len(small)], small, "got replies under small limits unlike those under the defaults") {
			t.Fatalf("got %d replies under small limits, %d under the defaults", len(small), len(ours))
		}
		if !isLimit(smallErr) && (len(small) < len(ours) || !sameError(smallErr, err)) {
			t.Fatalf("got %v under small limits after %d replies, %v under the defaults after %d", smallErr, len(small), err, len(ours))
		}

		if isLimit(err) {
			return // redigo would go on, into what the limit is there to stop
		}
		if err != io.EOF && declaresMoreThan(data, len(data)) {
			return // redigo would allocate what the input only declares
		}
		theirs, theirErr := readAll(redigoReader{redis.NewConn(&scriptConn{r: bytes.NewReader(data)}, 0, 0)})
		if !assert.Equal(t, theirs, ours, "got replies unlike redigo's") {
			return
		}
		// Having read as many replies, redigo failed on the next one too:
		// at the end (io.EOF, which redigo also gives for a cut line), or
		// where this Reader did.
		if err == io.EOF && theirErr != io.EOF {
			t.Fatalf("got every reply read, redigo failed with %v", theirErr)
		}
	})
}
