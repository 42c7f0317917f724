package resp

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/gomodule/redigo/redis"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

var validReplies = []struct {
	name string
	in   string
	want any
}{
	{"OK", "+OK\r\n", "OK"},
	{"PONG", "+PONG\r\n", "PONG"},
	{"simple string", "+hello world\r\n", "hello world"},
	{"empty simple string", "+\r\n", ""},
	{"simple string with a bare CR", "+a\rb\r\n", "a\rb"},
	{"error", "-ERR wrong type\r\n", redis.Error("ERR wrong type")},
	{"empty error", "-\r\n", redis.Error("")},
	{"zero", ":0\r\n", int64(0)},
	{"negative", ":-12\r\n", int64(-12)},
	{"minus zero", ":-0\r\n", int64(0)},
	{"leading zeros", ":007\r\n", int64(7)},
	{"max int64", ":9223372036854775807\r\n", int64(9223372036854775807)},
	{"min int64", ":-9223372036854775808\r\n", int64(-9223372036854775808)},
	{"bulk", "$3\r\nabc\r\n", []byte("abc")},
	{"empty bulk", "$0\r\n\r\n", []byte{}},
	{"null bulk", "$-1\r\n", nil},
	{"bulk holding CRLF", "$4\r\n\r\n\r\n\r\n", []byte("\r\n\r\n")},
	{"bulk length with leading zeros", "$003\r\nabc\r\n", []byte("abc")},
	{"bulk longer than the buffer", "$5000\r\n" + strings.Repeat("x", 5000) + "\r\n", []byte(strings.Repeat("x", 5000))},
	{"bulk longer than a chunk", "$200000\r\n" + strings.Repeat("y", 200000) + "\r\n", []byte(strings.Repeat("y", 200000))},
	{"empty array", "*0\r\n", []any{}},
	{"null array", "*-1\r\n", nil},
	{"array", "*3\r\n$1\r\na\r\n:1\r\n+OK\r\n", []any{[]byte("a"), int64(1), "OK"}},
	{"array holding an error", "*2\r\n-ERR x\r\n$-1\r\n", []any{redis.Error("ERR x"), nil}},
	{"nested arrays", "*3\r\n*1\r\n*0\r\n*-1\r\n*2\r\n:1\r\n*1\r\n$0\r\n\r\n",
		[]any{[]any{[]any{}}, nil, []any{int64(1), []any{[]byte{}}}}},
	{"array longer than its preallocation", "*20\r\n" + strings.Repeat(":5\r\n", 20),
		[]any{int64(5), int64(5), int64(5), int64(5), int64(5), int64(5), int64(5), int64(5), int64(5), int64(5),
			int64(5), int64(5), int64(5), int64(5), int64(5), int64(5), int64(5), int64(5), int64(5), int64(5)}},
	{"simple string longer than the buffer", "+" + strings.Repeat("s", 10000) + "\r\n", strings.Repeat("s", 10000)},
}

func TestReadReplyReturnsWhatRedigoReturns(t *testing.T) {
	for _, tc := range validReplies {
		t.Run(tc.name, func(t *testing.T) {
			got, err := readOne(tc.in)
			require.NoError(t, err)
			assert.Equal(t, tc.want, got, "got %#v, want %#v", got, tc.want)

			oracle, err := redigoReply([]byte(tc.in))
			require.NoError(t, err)
			assert.Equal(t, oracle, got, "got %#v, redigo %#v", got, oracle)
		})
	}
}

func TestReadReplyReadsRepliesOneAfterAnother(t *testing.T) {
	var in strings.Builder
	for _, tc := range validReplies {
		in.WriteString(tc.in)
	}
	rd := NewReader(strings.NewReader(in.String()))
	for _, tc := range validReplies {
		got, err := rd.ReadReply()
		require.NoError(t, err, tc.name)
		assert.Equal(t, tc.want, got, tc.name)
	}
	_, err := rd.ReadReply()
	assert.Equal(t, io.EOF, err, "got %v at the end, want io.EOF", err)
}

func TestReadReplyRejectsWhatCannotBeAReply(t *testing.T) {
	for _, tc := range []struct {
		name   string
		in     string
		opts   []Option
		reason string
		line   string
	}{
		{"HTTP server", "HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n", nil, reasonNotRESP, "HTTP/1.1 400 Bad Request"},
		{"TLS server", "\x15\x03\x01\x00\x02\x02\x16", nil, reasonNotRESP, "\x15\x03\x01\x00\x02\x02\x16"},
		{"empty line", "\r\n", nil, reasonNotRESP, ""},
		{"RESP3 null in an array", "*1\r\n_\r\n", nil, reasonType, "_"},
		{"unknown type in an array", "*2\r\n:1\r\n?\r\n", nil, reasonType, "?"},
		{"LF alone", "+OK\n", nil, reasonCRLF, "+OK"},
		{"CR not before LF", "+OK\rx\n", nil, reasonCRLF, "+OK\rx"},
		{"bulk without its CRLF", "$3\r\nabcde\r\n", nil, reasonBulkEnd, "de"},
		{"bulk followed by LF alone", "$3\r\nabc\n\r\n", nil, reasonBulkEnd, "\n\r"},
		{"non-numeric length", "$x\r\n", nil, reasonLength, "$x"},
		{"empty length", "*\r\n", nil, reasonLength, "*"},
		{"length -2", "$-2\r\n", nil, reasonLength, "$-2"},
		{"length -0", "*-0\r\n", nil, reasonLength, "*-0"},
		{"length with a plus", "$+1\r\n", nil, reasonLength, "$+1"},
		{"length with a space", "$ 1\r\n", nil, reasonLength, "$ 1"},
		{"bulk length past int64", "$9223372036854775808\r\n", nil, reasonLengthRange, "$9223372036854775808"},
		{"array length past int64", "*99999999999999999999\r\n", nil, reasonLengthRange, "*99999999999999999999"},
		{"bulk past the default MaxBulkLen", "$536870913\r\n", nil, reasonBulkLen, "$536870913"},
		{"bulk past a MaxBulkLen set", "$11\r\nhello world\r\n", []Option{MaxBulkLen(10)}, reasonBulkLen, "$11"},
		{"non-numeric integer", ":abc\r\n", nil, reasonInt, ":abc"},
		{"empty integer", ":\r\n", nil, reasonInt, ":"},
		{"minus alone", ":-\r\n", nil, reasonInt, ":-"},
		{"integer with a plus", ":+1\r\n", nil, reasonInt, ":+1"},
		{"fraction", ":1.5\r\n", nil, reasonInt, ":1.5"},
		{"integer past int64", ":9223372036854775808\r\n", nil, reasonIntRange, ":9223372036854775808"},
		{"integer below int64", ":-9223372036854775809\r\n", nil, reasonIntRange, ":-9223372036854775809"},
		{"arrays deeper than MaxDepth", "*1\r\n*1\r\n*1\r\n*1\r\n:1\r\n", []Option{MaxDepth(3)}, reasonDepth, "*1"},
		{"line past a MaxLineLen set", "+" + strings.Repeat("a", 11) + "\r\n", []Option{MaxLineLen(10)}, reasonLongLine, "+aaaaaaaaaaa"},
		{"line past the default MaxLineLen", "-" + strings.Repeat("e", DefaultMaxLineLen+1) + "\r\n", nil, reasonLongLine, "-" + strings.Repeat("e", quoteLen-1)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := readOne(tc.in, tc.opts...)
			require.ErrorIs(t, err, ErrProtocol)
			var pe *ProtocolError
			require.ErrorAs(t, err, &pe)
			assert.Equal(t, tc.reason, pe.Reason, "got reason %q, want %q", pe.Reason, tc.reason)
			assert.Equal(t, tc.line, pe.Line, "got line %q, want %q", pe.Line, tc.line)
		})
	}
}

func TestReadReplyAcceptsWhatIsExactlyAtALimit(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   string
		opts []Option
	}{
		{"bulk of MaxBulkLen", "$10\r\nhelloworld\r\n", []Option{MaxBulkLen(10)}},
		{"arrays MaxDepth deep", "*1\r\n*1\r\n*1\r\n:1\r\n", []Option{MaxDepth(3)}},
		{"line of MaxLineLen", "+" + strings.Repeat("a", 9) + "\r\n", []Option{MaxLineLen(10)}},
		{"line of the default MaxLineLen", "+" + strings.Repeat("a", DefaultMaxLineLen-1) + "\r\n", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := readOne(tc.in, tc.opts...)
			assert.NoError(t, err)
		})
	}
}

func TestReadReplyReportsAStreamCutInsideAReplyAsUnexpectedEOF(t *testing.T) {
	for _, in := range []string{"+OK", "+OK\r", "$3\r\nab", "$3\r\nabc", "$3\r\nabc\r", "*2\r\n:1\r\n", "*1\r\n*1\r\n", "$", "*"} {
		_, err := readOne(in)
		assert.Equal(t, io.ErrUnexpectedEOF, err, "reading %q: got %v, want io.ErrUnexpectedEOF", in, err)
	}
	_, err := readOne("")
	assert.Equal(t, io.EOF, err, "reading nothing: got %v, want io.EOF", err)
}

func TestProtocolErrorSaysThePeerIsNotSpeakingRESPAndQuotesWhatItSent(t *testing.T) {
	_, err := readOne("HTTP/1.1 400 Bad Request\r\n\r\n")
	want := `resp: peer is not speaking RESP (is it a Redis server?), it sent: "HTTP/1.1 400 Bad Request"`
	assert.EqualError(t, err, want)
}

func TestProtocolErrorQuotesAtMost64BytesOfTheLine(t *testing.T) {
	_, err := readOne("+" + strings.Repeat("\x00", 10) + "\n")
	assert.EqualError(t, err, `resp: line not ended by CRLF: "+\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00"`)

	_, err = readOne("<" + strings.Repeat("x", 1000) + "\r\n")
	want := `resp: peer is not speaking RESP (is it a Redis server?), it sent: "<` + strings.Repeat("x", 63) + `"...`
	assert.EqualError(t, err, want)
}

func TestReadReplyTellsAStrangerFromAStreamOutOfStep(t *testing.T) {
	rd := NewReader(strings.NewReader("+OK\r\nHTTP/1.1 400 Bad Request\r\n"))
	_, err := rd.ReadReply()
	require.NoError(t, err)
	_, err = rd.ReadReply()
	var pe *ProtocolError
	require.ErrorAs(t, err, &pe)
	assert.Equal(t, reasonType, pe.Reason, "got %q after a valid reply, want %q", pe.Reason, reasonType)
}

// The attacks of issue 19, each of which redigo answers with gigabytes or
// a fatal out-of-memory error. Not parallel: allocatedBy counts the process.
func TestReadReplyAllocatesInProportionToBytesReceived(t *testing.T) {
	const budget = 2 << 20
	// The dearest input per byte: arrays of 16 nested to MaxDepth, each
	// given room for 16 elements (256 bytes) with its first, and a frame
	// on a stack that grows by doubling.
	const worst = DefaultMaxDepth*(arrayPrealloc*16+2*32) + budget
	for _, tc := range []struct {
		name   string
		in     []byte
		opts   []Option
		reason string // of the ProtocolError expected, or
		err    error  // the error expected
		budget uint64
	}{
		{"bulk of 2e9 declared, 3 sent", []byte("$2000000000\r\nabc"), nil, reasonBulkLen, nil, budget},
		{"bulk of 2e9 declared under a MaxBulkLen that allows it", []byte("$2000000000\r\nabc"), []Option{MaxBulkLen(4 << 30)}, "", io.ErrUnexpectedEOF, budget},
		{"bulk of 5e8 declared, 3 sent", []byte("$500000000\r\nabc"), nil, "", io.ErrUnexpectedEOF, budget},
		{"array of 2e9 declared, none sent", []byte("*2000000000\r\n"), nil, "", io.ErrUnexpectedEOF, budget},
		{"array of 2e9 declared, one sent", []byte("*2000000000\r\n:1\r\n"), nil, "", io.ErrUnexpectedEOF, budget},
		{"arrays nested 200,000 deep", bytes.Repeat([]byte("*1\r\n"), 200000), nil, reasonDepth, nil, budget},
		{"arrays of 16 nested until MaxDepth", bytes.Repeat([]byte("*16\r\n:1\r\n"), DefaultMaxDepth+1), nil, reasonDepth, nil, worst},
		{"1 MB simple string without CRLF", append([]byte("+"), bytes.Repeat([]byte("a"), 1<<20)...), nil, reasonLongLine, nil, budget},
		{"1 MB length without CRLF", append([]byte("$"), bytes.Repeat([]byte("9"), 1<<20)...), nil, reasonLongLine, nil, budget},
		{"1 MB of what is not RESP", bytes.Repeat([]byte("a"), 1<<20), nil, reasonNotRESP, nil, budget},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var err error
			n := allocatedBy(func() {
				_, err = NewReader(bytes.NewReader(tc.in), tc.opts...).ReadReply()
			})
			if tc.reason != "" {
				var pe *ProtocolError
				require.ErrorAs(t, err, &pe)
				assert.Equal(t, tc.reason, pe.Reason, "got reason %q, want %q", pe.Reason, tc.reason)
			} else {
				assert.Equal(t, tc.err, err, "got %v, want %v", err, tc.err)
			}
			t.Logf("%d bytes allocated", n)
			assert.Less(t, n, tc.budget, "got %d bytes allocated, want under %d", n, tc.budget)
		})
	}
}

func TestReadReplyAllocatesAboutWhatALargeTrueReplyIs(t *testing.T) {
	const size = 8 << 20
	in := append([]byte("$8388608\r\n"), bytes.Repeat([]byte("z"), size)...)
	in = append(in, "\r\n"...)
	var got any
	var err error
	n := allocatedBy(func() {
		got, err = NewReader(bytes.NewReader(in)).ReadReply()
	})
	require.NoError(t, err)
	assert.Len(t, got, size)
	// Doubling from bulkChunk: the buffers sum to under twice the value.
	assert.Less(t, n, uint64(2*size+1<<20), "got %d bytes allocated for %d received, want under %d", n, size, 2*size+1<<20)
}

func TestReaderForgetsAFailedReply(t *testing.T) {
	rd := NewReader(strings.NewReader("*2\r\n*1\r\n$1\r\na\r\n?"))
	_, err := rd.ReadReply()
	require.Error(t, err)
	assert.Empty(t, rd.stack, "got %d arrays still on the stack, want none", len(rd.stack))
	for _, f := range rd.stack[:cap(rd.stack)] {
		assert.Nil(t, f.elems, "got an array of a failed reply still referenced")
	}
}

func TestProtocolErrorIsNotOtherErrors(t *testing.T) {
	pe := protocolError(reasonType, []byte("?"))
	assert.False(t, errors.Is(pe, io.EOF), "got a ProtocolError matching io.EOF")
	assert.True(t, errors.Is(pe, ErrProtocol), "got a ProtocolError not matching ErrProtocol")
}

func TestArrayElementsNeverShareBytesACallerCanWrite(t *testing.T) {
	rd := NewReader(strings.NewReader("*2\r\n$1\r\na\r\n$1\r\nb\r\n*1\r\n$1\r\nc\r\n"))
	first, err := rd.ReadReply()
	require.NoError(t, err)
	elems := first.([]any)
	a := append(elems[0].([]byte), "xyz"...)
	a[0] = 'A'
	second, err := rd.ReadReply()
	require.NoError(t, err)
	assert.Equal(t, []byte("a"), elems[0], "got the first element changed by an append to a copy")
	assert.Equal(t, []byte("b"), elems[1], "got the second element changed by an append to the first")
	assert.Equal(t, []any{[]byte("c")}, second, "got the next reply written over by an append to the last")
}
