package resp

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gomodule/redigo/redis"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

type stringer struct{}

func (stringer) String() string { return "stringer" }

type argument struct{ v any }

func (a argument) RedisArg() any { return a.v }

// everyArg holds an argument of every kind redigo's writeArg tells apart.
var everyArg = []any{
	"s", "", []byte("b"), []byte{}, []byte(nil),
	0, -1, 1 << 40, int64(-9223372036854775808),
	1.5, 0.1, 1e21, math.Copysign(0, -1), math.Inf(1), math.NaN(), 3.0,
	true, false, nil,
	int8(-8), int16(16), int32(-32), uint(7), uint8(8), uint16(16), uint32(32), uint64(18446744073709551615),
	float32(0.1), complex(1, 2),
	errors.New("an error"), stringer{}, struct{ A int }{1}, []string{"x", "y"}, (*int)(nil),
	argument{"via RedisArg"}, argument{42}, argument{nil}, argument{argument{"nested"}},
	redis.Args{"a", 1},
}

// conversation is what a client does and what the server answers, played
// against both redigo's connection and ours.
var conversation = []struct {
	name   string
	server string
	do     func(c redis.Conn) (any, error)
}{
	{"Do with nothing pending returns its reply", "+OK\r\n",
		func(c redis.Conn) (any, error) { return c.Do("SET", "k", "v") }},
	{"Do with an empty command returns the pending replies", "+OK\r\n$1\r\nv\r\n",
		func(c redis.Conn) (any, error) {
			c.Send("SET", "k", "v")
			c.Send("GET", "k")
			return c.Do("")
		}},
	{"Do with an empty command and nothing pending returns nil", "",
		func(c redis.Conn) (any, error) { return c.Do("") }},
	{"Do with an empty command keeps errors among the replies", "-ERR one\r\n:2\r\n",
		func(c redis.Conn) (any, error) {
			c.Send("INCR", "s")
			c.Send("INCR", "n")
			return c.Do("")
		}},
	{"Do returns the first error of the pending replies", "-ERR not an integer\r\n-ERR second\r\n$1\r\nv\r\n",
		func(c redis.Conn) (any, error) {
			c.Send("INCR", "s")
			c.Send("INCR", "s")
			return c.Do("GET", "k")
		}},
	{"Do returns an error reply as reply and error", "-ERR unknown command\r\n",
		func(c redis.Conn) (any, error) { return c.Do("NOPE") }},
	{"Do returns a null bulk as nil", "$-1\r\n",
		func(c redis.Conn) (any, error) { return c.Do("GET", "missing") }},
	{"Receive returns an error reply as error only", "-ERR x\r\n",
		func(c redis.Conn) (any, error) {
			c.Send("X")
			c.Flush()
			return c.Receive()
		}},
	{"Receive past the pending count keeps it at zero", "*3\r\n$9\r\nsubscribe\r\n$1\r\nc\r\n:1\r\n*3\r\n$7\r\nmessage\r\n$1\r\nc\r\n$2\r\nhi\r\n+PONG\r\n",
		func(c redis.Conn) (any, error) {
			c.Send("SUBSCRIBE", "c")
			c.Flush()
			first, err := c.Receive()
			if err != nil {
				return nil, err
			}
			second, err := c.Receive()
			if err != nil {
				return nil, err
			}
			pong, err := c.Do("PING")
			return []any{first, second, pong}, err
		}},
	{"arguments of every kind", "+OK\r\n",
		func(c redis.Conn) (any, error) { return c.Do("ECHO", everyArg...) }},
	{"a closed stream fails the call", "",
		func(c redis.Conn) (any, error) { return c.Do("GET", "k") }},
}

func TestConnBehavesAsRedigosConnection(t *testing.T) {
	var script strings.Builder
	for _, step := range conversation {
		script.WriteString(step.server)
	}
	theirs := newScriptConn(script.String())
	ours := newScriptConn(script.String())
	rc := redis.NewConn(theirs, time.Second, time.Second)
	c := NewConn(ours, time.Second, time.Second)
	for _, step := range conversation {
		want, wantErr := step.do(rc)
		got, gotErr := step.do(c)
		assert.Equal(t, want, got, "%s: got reply %#v, redigo %#v", step.name, got, want)
		if _, ok := wantErr.(redis.Error); ok || wantErr == nil {
			assert.Equal(t, wantErr, gotErr, "%s: got error %v, redigo %v", step.name, gotErr, wantErr)
		} else {
			assert.Error(t, gotErr, "%s: got no error, redigo %v", step.name, wantErr)
		}
	}
	assert.Equal(t, theirs.written.String(), ours.written.String(), "got written bytes unlike redigo's")
	assert.Error(t, c.Err(), "got no sticky error after the stream ended")
	assert.True(t, ours.closed, "got the net.Conn open after a fatal error")
}

func TestConnWritesArgumentsAsRedigoDoes(t *testing.T) {
	for _, arg := range everyArg {
		theirs, ours := newScriptConn(""), newScriptConn("")
		rc := redis.NewConn(theirs, 0, 0)
		require.NoError(t, rc.Send("CMD", arg, "tail"))
		require.NoError(t, rc.Flush())
		c := NewConn(ours, 0, 0)
		require.NoError(t, c.Send("CMD", arg, "tail"))
		require.NoError(t, c.Flush())
		assert.Equal(t, theirs.written.String(), ours.written.String(), "writing %#v", arg)

		cmd, err := NewReader(strings.NewReader(ours.written.String())).ReadReply()
		require.NoError(t, err)
		want := cmd.([]any)[1].([]byte)
		assert.Equal(t, string(want), string(AppendArg(nil, arg)), "AppendArg(%#v)", arg)
	}
}

func TestAppendArgAllocatesNothingForCommonTypes(t *testing.T) {
	dst := make([]byte, 0, 64)
	for _, arg := range []any{"string", []byte("bytes"), 12345, int64(-12345), 1.25, true, nil, argument{"s"}} {
		allocs := testing.AllocsPerRun(100, func() { dst = AppendArg(dst[:0], arg) })
		assert.Zero(t, allocs, "got %v allocations appending %#v, want 0", allocs, arg)
	}
}

func TestConnSendAllocatesNothingForCommonTypes(t *testing.T) {
	c := NewConn(newScriptConn(""), 0, 0)
	args := []any{"key", []byte("value"), 12345, int64(7), 2.5, false, nil}
	allocs := testing.AllocsPerRun(100, func() {
		c.Send("SET", args...)
		c.Flush()
	})
	assert.Zero(t, allocs, "got %v allocations per Send and Flush, want 0", allocs)
}

func TestConnCloseReturnsTheStickyErrorAfterTheFirst(t *testing.T) {
	nc := newScriptConn("")
	c := NewConn(nc, 0, 0)
	assert.NoError(t, c.Close())
	assert.True(t, nc.closed)
	assert.Equal(t, ErrClosed, c.Close())
	assert.Equal(t, ErrClosed, c.Err())
	_, err := c.Do("PING")
	assert.Equal(t, ErrClosed, err, "got %v from Do on a closed Conn, want ErrClosed", err)
	assert.Equal(t, ErrClosed, c.Send("PING"))
	assert.Equal(t, ErrClosed, c.Flush())
	_, err = c.Receive()
	assert.Equal(t, ErrClosed, err)
}

func TestConnProtocolErrorSticksAndClosesTheNetConn(t *testing.T) {
	nc := newScriptConn("$2000000000\r\nabc")
	c := NewConn(nc, 0, 0)
	_, err := c.Do("GET", "k")
	require.ErrorIs(t, err, ErrProtocol)
	assert.ErrorIs(t, c.Err(), ErrProtocol)
	assert.True(t, nc.closed, "got the net.Conn open after a protocol error")
}

func TestConnMaxBulkLenOptionReachesItsReader(t *testing.T) {
	c := NewConn(newScriptConn("$5\r\nhello\r\n"), 0, 0, MaxBulkLen(4))
	_, err := c.Do("GET", "k")
	var pe *ProtocolError
	require.ErrorAs(t, err, &pe)
	assert.Equal(t, reasonBulkLen, pe.Reason)
}

// trickle writes p to nc in pieces, one each tick, as a slow link would.
func trickle(nc net.Conn, p []byte, piece int, tick time.Duration) error {
	ticker := time.NewTicker(tick)
	defer ticker.Stop()
	for len(p) > 0 {
		<-ticker.C
		n, err := nc.Write(p[:min(piece, len(p))])
		if err != nil {
			return err
		}
		p = p[n:]
	}
	return nil
}

func TestConnReadTimeoutBoundsSilenceNotASlowSteadyReply(t *testing.T) {
	const (
		size    = 256 << 10
		timeout = 300 * time.Millisecond
		tick    = 10 * time.Millisecond
		piece   = 8 << 10 // 32 pieces: about 320ms in all, past the timeout
	)
	value := []byte(strings.Repeat("v", size))
	nc := fakeServer(t, func(server net.Conn) {
		readCommand(t, NewReader(server))
		reply := fmt.Appendf(nil, "$%d\r\n%s\r\n", size, value)
		trickle(server, reply, piece, tick)
	})
	c := NewConn(nc, timeout, timeout)
	start := time.Now()
	got, err := c.Do("GET", "big")
	elapsed := time.Since(start)
	require.NoError(t, err, "after %v", elapsed)
	assert.Equal(t, value, got)
	if elapsed < timeout {
		t.Logf("the reply came in %v, within the timeout: the link was not slow enough to test", elapsed)
	}
}

func TestConnReadTimeoutFailsALinkThatStalls(t *testing.T) {
	const timeout = 100 * time.Millisecond
	release := make(chan struct{})
	nc := fakeServer(t, func(server net.Conn) {
		readCommand(t, NewReader(server))
		server.Write([]byte("$10\r\nhalf"))
		<-release
	})
	defer close(release)
	c := NewConn(nc, timeout, timeout)
	start := time.Now()
	_, err := c.Do("GET", "k")
	elapsed := time.Since(start)
	var ne net.Error
	require.ErrorAs(t, err, &ne)
	assert.True(t, ne.Timeout(), "got %v, want a timeout", err)
	// The slack of deadlineReader lets a deadline stand that is up to a
	// 128th of the timeout older than the last read.
	assert.GreaterOrEqual(t, elapsed, timeout-timeout/128, "got a timeout after %v, want about %v", elapsed, timeout)
	assert.Less(t, elapsed, 10*timeout, "got a timeout after %v, want it soon after %v", elapsed, timeout)
	assert.Equal(t, err, c.Err())
}

// TestDoWithTimeoutsWaitsLongForTheFirstByteAndBriefly after it: a
// blocking command's reply may be long in coming, but once the server has
// begun to answer, silence means a dead link or a peer out of step.
func TestDoWithTimeoutsWaitsLongForTheFirstByteAndBrieflyAfterIt(t *testing.T) {
	const first, rest = 2 * time.Second, 100 * time.Millisecond
	release := make(chan struct{})
	nc := fakeServer(t, func(server net.Conn) {
		rd := NewReader(server)
		readCommand(t, rd)
		time.Sleep(3 * rest) // longer than rest, well within first
		server.Write([]byte("$5\r\nhello\r\n"))
		readCommand(t, rd)
		server.Write([]byte("$10\r\nhalf"))
		<-release
	})
	defer close(release)
	c := NewConn(nc, first, first)
	v, err := c.DoWithTimeouts(first, rest, "BLPOP", "k", 0)
	require.NoError(t, err, "a first byte within first")
	assert.Equal(t, []byte("hello"), v)

	start := time.Now()
	_, err = c.DoWithTimeouts(first, rest, "BLPOP", "k", 0)
	elapsed := time.Since(start)
	var ne net.Error
	require.ErrorAs(t, err, &ne)
	assert.True(t, ne.Timeout(), "got %v, want a timeout", err)
	assert.Less(t, elapsed, first/2, "got a timeout after %v, want about rest (%v) after the reply began", elapsed, rest)
}

func TestConnWriteTimeoutBoundsStallsNotALargeArgumentOverASlowLink(t *testing.T) {
	const (
		size    = 256 << 10
		timeout = 300 * time.Millisecond
	)
	nc := fakeServer(t, func(server net.Conn) {
		// Read the command slowly: 8 KiB each 10ms, about 320ms in all.
		ticker := time.NewTicker(10 * time.Millisecond)
		defer ticker.Stop()
		buf := make([]byte, 8<<10)
		for got := 0; got < size; {
			<-ticker.C
			n, err := server.Read(buf)
			if err != nil {
				t.Errorf("server reading: %v", err)
				return
			}
			got += n
		}
		// The rest of the command is short; then answer.
		server.Read(buf)
		server.Write([]byte("+OK\r\n"))
	})
	c := NewConn(nc, time.Second, timeout)
	got, err := c.Do("SET", "k", strings.Repeat("w", size))
	require.NoError(t, err)
	assert.Equal(t, "OK", got)
}

// deadlineRecorder is a net.Conn that records, in order, the read
// deadlines it is given and when each read starts.
type deadlineRecorder struct {
	net.Conn
	reads     int
	deadlines int
	// inForce is, at each read, the deadline last set before it.
	inForce []time.Time
	readAt  []time.Time
	last    time.Time
}

func (d *deadlineRecorder) Read(p []byte) (int, error) {
	d.reads++
	d.readAt = append(d.readAt, time.Now())
	d.inForce = append(d.inForce, d.last)
	return d.Conn.Read(p)
}

func (d *deadlineRecorder) SetReadDeadline(t time.Time) error {
	d.deadlines++
	d.last = t
	return d.Conn.SetReadDeadline(t)
}

func TestConnMovesTheReadDeadlineThroughTheNetConnAsBytesArrive(t *testing.T) {
	for _, timeout := range []time.Duration{0, time.Minute} {
		value := strings.Repeat("d", 64<<10)
		nc := &deadlineRecorder{Conn: fakeServer(t, func(server net.Conn) {
			readCommand(t, NewReader(server))
			trickle(server, fmt.Appendf(nil, "$%d\r\n%s\r\n", len(value), value), 2000, 2*time.Millisecond)
		})}
		c := NewConn(nc, timeout, 0)
		_, err := c.Do("GET", "k")
		require.NoError(t, err)
		require.Greater(t, nc.reads, 1, "got %d reads, want the reply read in many", nc.reads)
		assert.GreaterOrEqual(t, nc.deadlines, 1, "got no read deadline set")
		for i, d := range nc.inForce {
			if timeout == 0 {
				assert.True(t, d.IsZero(), "got deadline %v with timeout 0, want none", d)
				continue
			}
			// Within the slack, plus the moment between setting and reading.
			want := nc.readAt[i].Add(timeout - 2*time.Millisecond)
			assert.False(t, d.Before(want), "got deadline %v in force at read %d, want at least %v", d, i, want)
		}
		if timeout == 0 {
			assert.Equal(t, 1, nc.deadlines, "got %d deadlines set with timeout 0, want the one clearing any left", nc.deadlines)
		} else {
			// Pieces 2ms apart, a slack of 1ms: the deadline moves each time.
			assert.Greater(t, nc.deadlines, 1, "got the deadline set %d times over %d reads, want it moved", nc.deadlines, nc.reads)
		}
	}
}

func TestConnReceivesOnOneGoroutineWhileAnotherSends(t *testing.T) {
	const rounds = 200
	nc := fakeServer(t, func(server net.Conn) {
		rd := NewReader(server)
		for range rounds {
			args := readCommand(t, rd)
			if len(args) != 2 {
				return
			}
			fmt.Fprintf(server, "$%d\r\n%s\r\n", len(args[1]), args[1])
		}
	})
	c := NewConn(nc, time.Second, time.Second)
	var wg sync.WaitGroup
	wg.Go(func() {
		for i := range rounds {
			if err := c.Send("ECHO", fmt.Sprint("msg-", i)); err != nil {
				t.Errorf("Send: %v", err)
				return
			}
			if err := c.Flush(); err != nil {
				t.Errorf("Flush: %v", err)
				return
			}
		}
	})
	for i := range rounds {
		got, err := redis.String(c.Receive())
		require.NoError(t, err)
		assert.Equal(t, fmt.Sprint("msg-", i), got, "got reply %q to message %d", got, i)
	}
	wg.Wait()
}

func TestDoContextCancelledMidReplyClosesTheConnAndReturnsTheContextError(t *testing.T) {
	release := make(chan struct{})
	midReply := make(chan struct{})
	nc := fakeServer(t, func(server net.Conn) {
		readCommand(t, NewReader(server))
		server.Write([]byte("$10\r\nhal"))
		close(midReply)
		<-release
	})
	defer close(release)
	c := NewConn(nc, 0, 0)
	ctx, cancel := context.WithCancel(context.Background())
	got := make(chan error, 1)
	go func() {
		_, err := c.DoContext(ctx, "GET", "k")
		got <- err
	}()
	<-midReply
	cancel()
	err := <-got
	assert.ErrorIs(t, err, context.Canceled)
	assert.ErrorIs(t, c.Err(), context.Canceled)
}

func TestDoContextPastItsDeadlineReturnsDeadlineExceeded(t *testing.T) {
	release := make(chan struct{})
	nc := fakeServer(t, func(server net.Conn) {
		readCommand(t, NewReader(server))
		<-release
	})
	defer close(release)
	c := NewConn(nc, 0, 0)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	_, err := c.DoContext(ctx, "BLPOP", "q", "0")
	assert.ErrorIs(t, err, context.DeadlineExceeded)
	assert.Error(t, c.Err())
}

func TestDoContextAlreadyDoneLeavesTheConnUsable(t *testing.T) {
	nc := newScriptConn("+PONG\r\n")
	c := NewConn(nc, 0, 0)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := c.DoContext(ctx, "PING")
	assert.ErrorIs(t, err, context.Canceled)
	assert.NoError(t, c.Err())
	assert.Empty(t, nc.written.String(), "got a command written for a done context")
	got, err := c.DoContext(context.Background(), "PING")
	require.NoError(t, err)
	assert.Equal(t, "PONG", got)
}

func TestReceiveContextReturnsTheReplyOfALiveContext(t *testing.T) {
	nc := newScriptConn("+hi\r\n")
	c := NewConn(nc, 0, 0)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	got, err := c.ReceiveContext(ctx)
	require.NoError(t, err)
	assert.Equal(t, "hi", got)
	assert.NoError(t, c.Err())
}
