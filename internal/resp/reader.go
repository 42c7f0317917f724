package resp

import (
	"bufio"
	"errors"
	"io"
	"math"
	"strconv"

	"github.com/gomodule/redigo/redis"
)

// Defaults of the limits a Reader enforces; see the Option of each.
const (
	// DefaultMaxBulkLen is Redis's own default proto-max-bulk-len: a
	// default server stores no longer string, so cannot send one.
	DefaultMaxBulkLen int64 = 512 << 20

	// DefaultMaxLineLen is the bound Redis puts on an inline request it
	// reads (PROTO_INLINE_MAX_SIZE). Its replies' simple strings and errors
	// are far shorter, except MONITOR's, which quote whole commands.
	DefaultMaxLineLen = 64 << 10

	// DefaultMaxDepth is far above the handful of levels Redis's commands
	// nest. A Lua script's table can nest deeper, but Redis converts it
	// within Lua's stack of 8000 slots, one at least per level.
	DefaultMaxDepth = 10000
)

const (
	// bulkChunk is the most a bulk string is given before its bytes
	// arrive: a declared length costs no more until the peer sends more.
	// A 16 KiB value, common in caches, still takes one allocation.
	bulkChunk = 64 << 10

	// smallBulk is the longest bulk string that an array's elements share
	// a slab for, slabMax the largest slab. One allocation then serves many
	// small elements, at the cost that an element kept alone keeps its
	// slab, at most slabMax bytes of the same reply, from the collector.
	smallBulk = 256
	slabMax   = 4096

	// arrayPrealloc is the most elements an array gets room for at once.
	arrayPrealloc = 16

	// keptDepth is the deepest stack a Reader keeps between replies.
	keptDepth = 16

	// quoteLen bounds the bytes of an offending line a ProtocolError keeps.
	quoteLen = 64

	// readBufferSize is redigo's, so a connection costs what it did.
	readBufferSize = 4096
)

// An Option changes a limit of a Reader or Conn from its default.
type Option func(*limits)

type limits struct {
	maxBulkLen int64
	maxLineLen int
	maxDepth   int
}

func newLimits(opts []Option) limits {
	l := limits{maxBulkLen: DefaultMaxBulkLen, maxLineLen: DefaultMaxLineLen, maxDepth: DefaultMaxDepth}
	for _, o := range opts {
		o(&l)
	}
	return l
}

// MaxBulkLen sets the longest bulk string accepted, in bytes; n <= 0 keeps
// DefaultMaxBulkLen. Raise it with the server's proto-max-bulk-len.
func MaxBulkLen(n int64) Option {
	return func(l *limits) {
		if n > 0 {
			l.maxBulkLen = n
		}
	}
}

// MaxLineLen sets the longest simple string, error or integer line
// accepted, in bytes without the CRLF; n <= 0 keeps DefaultMaxLineLen.
// Raise it to read MONITOR's output of commands with large arguments.
func MaxLineLen(n int) Option {
	return func(l *limits) {
		if n > 0 {
			l.maxLineLen = n
		}
	}
}

// MaxDepth sets how deep arrays may nest, the outermost being depth 1;
// n <= 0 keeps DefaultMaxDepth.
func MaxDepth(n int) Option {
	return func(l *limits) {
		if n > 0 {
			l.maxDepth = n
		}
	}
}

// ErrProtocol matches every *ProtocolError under errors.Is.
var ErrProtocol = errors.New("resp: protocol error")

// ProtocolError reports bytes that cannot be a reply, or a reply past a
// limit. After one, the stream is out of step and no further reply can be
// trusted: close the connection.
type ProtocolError struct {
	// Reason says what was wrong.
	Reason string
	// Line is the start of the offending line, without its CRLF, at most
	// 64 bytes of it.
	Line string

	cut bool // Line is shorter than the line
}

// Error returns the reason and the quoted start of the line.
func (e *ProtocolError) Error() string {
	s := "resp: " + e.Reason + ": " + strconv.Quote(e.Line)
	if e.cut {
		s += "..."
	}
	return s
}

// Is reports whether target is ErrProtocol.
func (e *ProtocolError) Is(target error) bool { return target == ErrProtocol }

// The reasons a ProtocolError gives.
const (
	reasonNotRESP  = "peer is not speaking RESP (is it a Redis server?), it sent"
	reasonType     = "unknown reply type"
	reasonCRLF     = "line not ended by CRLF"
	reasonLongLine = "line longer than MaxLineLen"
	reasonLength   = "malformed length"
	reasonInt      = "malformed integer"
	reasonBulkEnd  = "bulk string not followed by CRLF"
	// Past a limit: redigo would read on, into a huge allocation, a
	// recursion as deep as the peer likes, or a silently wrapped number.
	reasonLengthRange = "length past int64"
	reasonBulkLen     = "bulk length past MaxBulkLen"
	reasonDepth       = "arrays nested deeper than MaxDepth"
	reasonIntRange    = "integer past int64"
)

func protocolError(reason string, line []byte) *ProtocolError {
	e := &ProtocolError{Reason: reason}
	if len(line) > quoteLen {
		line, e.cut = line[:quoteLen], true
	}
	e.Line = string(line)
	return e
}

// Shared so that the frequent replies cost no allocation, as in redigo.
var (
	okReply   any = "OK"
	pongReply any = "PONG"
)

// A Reader reads RESP2 replies from a stream, one at a time.
//
// It allocates in proportion to the bytes it has received, never to a
// length the peer declared: a bulk string grows in chunks as its bytes
// arrive, an array as its elements do. Nested arrays are parsed with an
// explicit stack, so no peer can drive a recursion.
//
// A Reader is not safe for concurrent use.
type Reader struct {
	br  *bufio.Reader
	lim limits

	// stack holds the arrays still being read, the innermost last.
	stack []frame

	// slab is room left for the small bulk strings of the reply being
	// read. It is never used for another reply: its bytes belong to the
	// caller once handed out.
	slab []byte

	// started is set once a line began with a type byte: a bad first
	// byte before that says the peer speaks something else entirely.
	started bool
}

// frame is an array being read.
type frame struct {
	elems []any // allocated with its first element
	left  int64 // elements still to come
}

// NewReader returns a Reader that reads from rd through a buffer of its
// own, unless rd is a *bufio.Reader of at least 4 KiB.
func NewReader(rd io.Reader, opts ...Option) *Reader {
	return &Reader{br: bufio.NewReaderSize(rd, readBufferSize), lim: newLimits(opts)}
}

// Buffered returns how many bytes the Reader holds that no reply has
// taken yet.
func (r *Reader) Buffered() int { return r.br.Buffered() }

// ReadReply reads one reply and returns what redigo v1.9.3 would: string
// for a simple string, redis.Error for an error, int64 for an integer,
// []byte for a bulk string, []any for an array, and nil for the null bulk
// string and the null array.
//
// A stream that ends between replies gives io.EOF, one that ends inside a
// reply io.ErrUnexpectedEOF. Bytes that cannot be a reply, or a reply past
// a limit, give a *ProtocolError. After any error the Reader is out of step
// with the stream and must not be used again.
func (r *Reader) ReadReply() (any, error) {
	v, err := r.readReply()
	r.slab = nil
	if err != nil {
		clear(r.stack) // the arrays read so far are garbage now
		r.stack = r.stack[:0]
		return nil, err
	}
	if cap(r.stack) > keptDepth {
		r.stack = nil // a deep reply's stack goes rather than stays with the connection
	}
	return v, nil
}

func (r *Reader) readReply() (any, error) {
	for {
		line, err := r.readLine()
		if err != nil {
			if err == io.EOF && len(r.stack) > 0 {
				err = io.ErrUnexpectedEOF
			}
			return nil, err
		}
		var v any
		switch line[0] {
		case '+':
			v = simpleString(line[1:])
		case '-':
			v = redis.Error(line[1:])
		case ':':
			v, err = parseInt(line)
		case '$':
			v, err = r.readBulk(line)
		default: // '*', as readLine checked the type byte
			var n int64
			if n, err = parseLen(line); err != nil {
				return nil, err
			}
			if n > 0 {
				if len(r.stack) == r.lim.maxDepth {
					return nil, protocolError(reasonDepth, line)
				}
				r.stack = append(r.stack, frame{left: n})
				continue
			}
			if n == 0 {
				v = []any{}
			}
		}
		if err != nil {
			return nil, err
		}
		if v, done := r.complete(v); done {
			return v, nil
		}
	}
}

// complete adds a finished value to the innermost array, and every array
// it finishes to the one around it. It reports the whole reply once the
// outermost is done.
func (r *Reader) complete(v any) (any, bool) {
	for len(r.stack) > 0 {
		f := &r.stack[len(r.stack)-1]
		if f.elems == nil {
			// Allocated only now, so that an array costs nothing until an
			// element has arrived to show the length was not a lie.
			f.elems = make([]any, 0, min(f.left, arrayPrealloc))
		}
		f.elems = append(f.elems, v)
		if f.left--; f.left > 0 {
			return nil, false
		}
		v = f.elems
		*f = frame{}
		r.stack = r.stack[:len(r.stack)-1]
	}
	return v, true
}

func simpleString(p []byte) any {
	switch string(p) {
	case "OK":
		return okReply
	case "PONG":
		return pongReply
	}
	return string(p)
}

// readLine returns the next line without its CRLF, having checked that it
// starts with a type byte. The line is valid until the next read.
func (r *Reader) readLine() ([]byte, error) {
	line, err := r.br.ReadSlice('\n')
	if len(line) > 0 && !isType(line[0]) {
		reason := reasonType
		if !r.started && len(r.stack) == 0 {
			reason = reasonNotRESP
		}
		return nil, protocolError(reason, firstLine(line))
	}
	if err == bufio.ErrBufferFull {
		line, err = r.readLongLine(line)
	}
	if err != nil {
		if err == io.EOF && len(line) > 0 {
			err = io.ErrUnexpectedEOF
		}
		return nil, err
	}
	r.started = true
	n := len(line) - 2 // at least 0: the line holds a type byte and '\n'
	if line[n] != '\r' {
		return nil, protocolError(reasonCRLF, line[:n+1])
	}
	if n > r.lim.maxLineLen {
		return nil, protocolError(reasonLongLine, line[:n])
	}
	return line[:n], nil
}

// readLongLine goes on with a line longer than the buffer, copying it, and
// gives up once it is longer than any line accepted.
func (r *Reader) readLongLine(line []byte) ([]byte, error) {
	long := append([]byte(nil), line...)
	for {
		if len(long) > r.lim.maxLineLen+2 {
			return nil, protocolError(reasonLongLine, long)
		}
		line, err := r.br.ReadSlice('\n')
		long = append(long, line...)
		if err != bufio.ErrBufferFull {
			return long, err
		}
	}
}

func isType(b byte) bool {
	return b == '+' || b == '-' || b == ':' || b == '$' || b == '*'
}

// firstLine cuts p at its first CR or LF, for showing what a stranger sent.
func firstLine(p []byte) []byte {
	for i, b := range p {
		if b == '\r' || b == '\n' {
			return p[:i]
		}
	}
	return p
}

// readBulk reads the body of the bulk string whose header is line.
func (r *Reader) readBulk(line []byte) (any, error) {
	n, err := parseLen(line)
	if err != nil || n < 0 {
		return nil, err
	}
	if n > r.lim.maxBulkLen {
		return nil, protocolError(reasonBulkLen, line)
	}
	p, err := r.readBody(int(n))
	if err != nil {
		return nil, err
	}
	return p, nil
}

// readBody reads n bytes and the CRLF after them. Past bulkChunk it grows
// the buffer only as bytes arrive, doubling it, so memory stays within a
// small multiple of what was received.
func (r *Reader) readBody(n int) ([]byte, error) {
	var p []byte
	if n > 0 && n <= smallBulk && len(r.stack) > 0 {
		p = r.carve(n)
	} else {
		p = make([]byte, min(n, bulkChunk))
	}
	if _, err := io.ReadFull(r.br, p); err != nil {
		return nil, unexpected(err)
	}
	for len(p) < n {
		q := make([]byte, min(n, 2*len(p)))
		copy(q, p)
		if _, err := io.ReadFull(r.br, q[len(p):]); err != nil {
			return nil, unexpected(err)
		}
		p = q
	}
	end, err := r.br.Peek(2)
	if err != nil {
		return nil, unexpected(err)
	}
	if end[0] != '\r' || end[1] != '\n' {
		return nil, protocolError(reasonBulkEnd, end)
	}
	_, _ = r.br.Discard(2) // cannot fail: the bytes are buffered
	return p, nil
}

// carve returns n bytes of the slab for a small bulk string in an array.
// A new slab is sized for the rest of the innermost array, were its
// elements all as long as this one, so a reply of small values takes one,
// and no more than slabMax whatever the array's declared length.
func (r *Reader) carve(n int) []byte {
	if len(r.slab) < n {
		left := int(min(r.stack[len(r.stack)-1].left, slabMax))
		r.slab = make([]byte, max(n, min(n*left, slabMax)))
	}
	// Capacity n: appending to one element cannot write over the next.
	p := r.slab[:n:n]
	r.slab = r.slab[n:]
	return p
}

// unexpected turns io.EOF inside a reply into io.ErrUnexpectedEOF.
func unexpected(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}

// parseLen parses the length in a bulk string or array header: -1 or a
// decimal number within int64, as redigo, which accepts leading zeros.
func parseLen(line []byte) (int64, error) {
	p := line[1:]
	if len(p) == 2 && p[0] == '-' && p[1] == '1' {
		return -1, nil
	}
	n, status := parseUint(p, math.MaxInt64)
	switch status {
	case numMalformed:
		return 0, protocolError(reasonLength, line)
	case numRange:
		return 0, protocolError(reasonLengthRange, line)
	}
	return int64(n), nil
}

// parseInt parses an integer reply, rejecting one past int64 that redigo
// would wrap around into a wrong value.
func parseInt(line []byte) (any, error) {
	p := line[1:]
	limit := uint64(math.MaxInt64)
	neg := len(p) > 0 && p[0] == '-'
	if neg {
		p = p[1:]
		limit++
	}
	n, status := parseUint(p, limit)
	switch status {
	case numMalformed:
		return nil, protocolError(reasonInt, line)
	case numRange:
		return nil, protocolError(reasonIntRange, line)
	}
	if neg {
		return -int64(n), nil // -(1<<63) wraps to itself, as it should
	}
	return int64(n), nil
}

// What parseUint found.
const (
	numOK = iota
	numMalformed
	numRange
)

// parseUint parses p as one or more decimal digits whose value is at most
// limit. Digits past the limit still count as digits, so that a number too
// large is told apart from one that is not a number.
func parseUint(p []byte, limit uint64) (uint64, int) {
	if len(p) == 0 {
		return 0, numMalformed
	}
	var n uint64
	status := numOK
	for _, b := range p {
		if b < '0' || b > '9' {
			return 0, numMalformed
		}
		d := uint64(b - '0')
		if n > (limit-d)/10 {
			status = numRange
		}
		n = n*10 + d
	}
	return n, status
}
