package redisalive

import (
	"math"
	"strings"
	"testing"
	"time"

	"github.com/gomodule/redigo/redis"
	"github.com/redisalive/redisalive/internal/resp"
	"github.com/stretchr/testify/assert"
)

func TestLookupCommandFindsEveryBlockingCommandsTimeout(t *testing.T) {
	cases := []struct {
		cmd  string
		args []any
		kind blockKind
		want time.Duration // 0: blocks until a reply
	}{
		{"BLPOP", []any{"a", "b", 5}, blockPop, 5 * time.Second},
		{"brpop", []any{"a", "2.5"}, blockPop, 2500 * time.Millisecond},
		{"BRPOPLPUSH", []any{"a", "b", 0}, blockPop, 0},
		{"BLMOVE", []any{"a", "b", "LEFT", "RIGHT", 1.25}, blockPop, 1250 * time.Millisecond},
		{"BZPOPMIN", []any{"z", int64(3)}, blockPop, 3 * time.Second},
		{"BZPOPMAX", []any{"z", []byte("0.001")}, blockPop, time.Millisecond},
		{"BLMPOP", []any{"2.5", 2, "l1", "l2", "LEFT"}, blockPop, 2500 * time.Millisecond},
		{"BZMPOP", []any{0, 1, "z", "MIN", "COUNT", 2}, blockPop, 0},
		{"XREAD", []any{"COUNT", 10, "BLOCK", 5000, "STREAMS", "s", "$"}, blockXRead, 5 * time.Second},
		{"xread", []any{"block", "0", "streams", "s", "0-0"}, blockXRead, 0},
		{"XREADGROUP", []any{"GROUP", "g", "c", "BLOCK", 250, "NOACK", "STREAMS", "s", ">"}, blockPop, 250 * time.Millisecond},
		{"WAIT", []any{1, 5000}, blockWait, 5 * time.Second},
		{"WAITAOF", []any{1, 0, 100}, blockWaitAOF, 100 * time.Millisecond},
		{"BLPOP", []any{"a", redis.Args{}.Add(7)[0]}, blockPop, 7 * time.Second},
		{"BLPOP", []any{"a", 0.0004}, blockPop, time.Millisecond}, // rounded up, as Redis does
		{"BLPOP", []any{"a", "1e15"}, blockPop, 0},                // beyond any wait: until a reply
		{"XREAD", []any{"BLOCK", int64(1 << 62), "STREAMS", "s", "$"}, blockXRead, 0},
		{"BLPOP", []any{"a", false}, blockPop, 0}, // redigo writes "0"
		{"BLPOP", []any{"a", true}, blockPop, time.Second},
	}
	for _, tc := range cases {
		info := lookupCommand(tc.cmd, tc.args)
		if !assert.Equal(t, tc.kind, info.block.kind, "%s %v: kind", tc.cmd, tc.args) {
			continue
		}
		got, ok := info.block.blockTime(tc.args)
		assert.True(t, ok, "%s %v: timeout not understood", tc.cmd, tc.args)
		assert.Equal(t, tc.want, got, "%s %v: block time", tc.cmd, tc.args)
	}
}

func TestLookupCommandLeavesOrdinaryAndMalformedCommandsAlone(t *testing.T) {
	for _, tc := range []struct {
		cmd  string
		args []any
	}{
		{"GET", []any{"k"}},
		{"XREAD", []any{"COUNT", 1, "STREAMS", "s", "$"}},                 // no BLOCK
		{"XREAD", []any{"COUNT", "BLOCK", "STREAMS", "s", "$"}},           // "BLOCK" is the count
		{"XREADGROUP", []any{"GROUP", "g", "c", "STREAMS", "BLOCK", "$"}}, // a stream named BLOCK
		{"BLPOP", []any{"only-a-key"}},                                    // arity: the server says so
		{"WAIT", []any{1}},                                                // arity
		{"BLPOPX", []any{"a", 0}},                                         // a lookalike name
	} {
		assert.Equal(t, notBlocking, lookupCommand(tc.cmd, tc.args).block.kind, "%s %v", tc.cmd, tc.args)
	}
	// Timeouts the server rejects at once make an ordinary command.
	// So do timeouts too large for it: it adds them to the time in ms.
	for _, bad := range []any{"soon", -1, "NaN", nil, "1.5x", "1e300", math.Inf(1), 9.3e15} {
		spec := lookupCommand("BLPOP", []any{"a", bad}).block
		_, ok := spec.blockTime([]any{"a", bad})
		assert.False(t, ok, "BLPOP timeout %v", bad)
	}
	spec := lookupCommand("XREAD", []any{"BLOCK", "1.5", "STREAMS", "s", "$"}).block
	_, ok := spec.blockTime([]any{"BLOCK", "1.5", "STREAMS", "s", "$"})
	assert.False(t, ok, "XREAD BLOCK takes whole milliseconds")
	spec = lookupCommand("XREAD", []any{"BLOCK", "1e30", "STREAMS", "s", "$"}).block
	_, ok = spec.blockTime([]any{"BLOCK", "1e30", "STREAMS", "s", "$"})
	assert.False(t, ok, "XREAD BLOCK past 2^63 ms")
}

func TestLookupCommandTellsWhatACommandLeavesOnTheConnection(t *testing.T) {
	for cmd, want := range map[string]effect{
		"multi": effMulti, "WATCH": effOpenTx, "EXEC": effCloseTx, "DISCARD": effCloseTx,
		"UNWATCH": effUnwatch, "SELECT": effTaint, "HELLO": effTaint, "MONITOR": effMonitor,
		"SUBSCRIBE": effSubscribe, "psubscribe": effSubscribe, "SSUBSCRIBE": effSubscribe, "SET": effNone,
	} {
		assert.Equal(t, want, lookupCommand(cmd, nil).effect, cmd)
	}
	assert.Equal(t, effTaint, lookupCommand("CLIENT", []any{"reply", "OFF"}).effect)
	assert.Equal(t, effTaint, lookupCommand("CLIENT", []any{[]byte("REPLY"), []byte("SKIP")}).effect, "as bytes")
	assert.Equal(t, effNone, lookupCommand("CLIENT", []any{"ID"}).effect)
}

func TestLookupCommandAllocatesNothingForOrdinaryCommands(t *testing.T) {
	args := []any{"key", "value"}
	allocs := testing.AllocsPerRun(1000, func() {
		for _, cmd := range []string{"GET", "SET", "EVALSHA", "CLIENT", "XADD", "BLPOP", "XREAD"} {
			lookupCommand(cmd, args)
		}
	})
	assert.Zero(t, allocs)
}

func TestFormatTimeoutWritesWholeUnitsAsIntegers(t *testing.T) {
	assert.Equal(t, "1", formatTimeout(time.Second, time.Second))
	assert.Equal(t, "0.25", formatTimeout(250*time.Millisecond, time.Second))
	assert.Equal(t, "1500", formatTimeout(1500*time.Millisecond, time.Millisecond))
}

func TestBlockingCallPlansRoundsWithinBlockTimeAndContextDeadline(t *testing.T) {
	start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	at := func(d time.Duration) time.Time { return start.Add(d) }
	const slice = time.Second
	forever := &blockingCall{start: start}
	finite := &blockingCall{start: start, total: 2500 * time.Millisecond}
	cases := []struct {
		name     string
		b        *blockingCall
		now      time.Time
		deadline time.Time
		first    bool
		wait     time.Duration
		plan     roundPlan
	}{
		{"forever: a full slice", forever, at(0), time.Time{}, true, slice, planRound},
		{"finite: a full slice while more than one is left", finite, at(time.Second), time.Time{}, false, slice, planRound},
		{"finite: the last round takes what is left", finite, at(2 * time.Second), time.Time{}, false, 500 * time.Millisecond, planRound},
		{"finite: used up", finite, at(2500 * time.Millisecond), time.Time{}, false, 0, planTimedOut},
		{"ctx: the round ends a margin before the deadline", forever, at(0), at(700 * time.Millisecond), false, 700*time.Millisecond - blockCtxMargin, planRound},
		{"ctx: too close for another round", forever, at(0), at(blockCtxMargin), false, 0, planAwaitCtx},
		{"ctx: the first round is sent however close", forever, at(0), at(time.Millisecond), true, time.Millisecond, planRound},
		{"ctx: far deadlines do not matter", forever, at(0), at(time.Hour), false, slice, planRound},
	}
	for _, tc := range cases {
		wait, plan := tc.b.plan(tc.now, tc.deadline, slice, tc.first)
		assert.Equal(t, tc.plan, plan, tc.name)
		assert.Equal(t, tc.wait, wait, tc.name)
	}
}

func TestBlockingCallEndsOnAnyReplyButTheTimedOutOne(t *testing.T) {
	pop := &blockingCall{spec: blockSpec{kind: blockPop}}
	assert.False(t, pop.ends(nil))
	assert.True(t, pop.ends([]any{[]byte("k"), []byte("v")}))
	wait := &blockingCall{spec: blockSpec{kind: blockWait}, args: []any{2, 1000}}
	assert.False(t, wait.ends(int64(1)), "1 of 2 replicas")
	assert.True(t, wait.ends(int64(2)))
	aof := &blockingCall{spec: blockSpec{kind: blockWaitAOF}, args: []any{1, 1, 1000}}
	assert.False(t, aof.ends([]any{int64(1), int64(0)}))
	assert.True(t, aof.ends([]any{int64(1), int64(1)}))
}

// FuzzCommandArguments feeds the code that reads a command's arguments
// before it is sent (its blocking timeout, a cluster key's position, XREAD's
// streams) with arguments no caller should write: it must never panic, and
// what it finds must lie within the arguments.
func FuzzCommandArguments(f *testing.F) {
	for _, seed := range []struct{ cmd, args string }{
		{"BLPOP", "a b 1.5"}, {"BZMPOP", "0 2 a b MIN"}, {"XREAD", "COUNT 1 BLOCK 0 STREAMS a b $ 0"},
		{"XREADGROUP", "GROUP g c BLOCK 10 STREAMS a >"}, {"WAIT", "1 0"}, {"WAITAOF", "1 1 0"},
		{"EVAL", "s 1e30 k"}, {"FCALL", "f NaN k"}, {"ZUNIONSTORE", "d 2 a b"}, {"XREAD", "STREAMS a b $"},
		{"BLMOVE", "a b LEFT RIGHT 1e300"}, {"CLIENT", "REPLY OFF"},
	} {
		f.Add(seed.cmd, seed.args, int64(1), int64(-1), int64(1))
	}
	f.Add("MSET", "a 1 b 2", int64(1), int64(math.MaxInt64), int64(math.MaxInt64))
	f.Fuzz(func(t *testing.T, cmd, joined string, first, last, step int64) {
		var args []any
		for _, a := range strings.Split(joined, " ") {
			args = append(args, a)
		}
		if spec := lookupCommand(cmd, args).block; spec.kind != notBlocking {
			if spec.arg < 0 || spec.arg >= len(args) {
				t.Fatalf("%s %q: timeout at argument %d of %d", cmd, joined, spec.arg, len(args))
			}
			if d, ok := spec.blockTime(args); ok && (d < 0 || d > maxBlock) {
				t.Fatalf("%s %q: block time %v", cmd, joined, d)
			}
		}
		if keys, ok := movableKeys(lowerASCII(cmd), args); ok && len(keys) > len(args) {
			t.Fatalf("%s %q: %d keys of %d arguments", cmd, joined, len(keys), len(args))
		}
		if keys, ids, ok := xreadStreams(args, 0); ok && (len(keys) == 0 || len(keys) != len(ids)) {
			t.Fatalf("XREAD %q: %d keys, %d IDs", joined, len(keys), len(ids))
		}
		spec := keySpec{first: int(first), last: int(last), step: int(step)}
		if keys, _ := spec.keys(cmd, args, func() ([]any, error) { return nil, nil }); len(keys) > len(args) {
			t.Fatalf("%+v of %q: %d keys of %d arguments", spec, joined, len(keys), len(args))
		}
	})
}

func TestArgFloatReadsAnArgumentAsRedigoWritesIt(t *testing.T) {
	for _, arg := range []any{"1.5", []byte("2"), 3, int64(-4), 0.25, math.Inf(1), float32(0.1), uint8(7), int32(-2), uint64(math.MaxUint64), true, false, nil, "x"} {
		got, gotOK := argFloat(arg)
		want, wantOK := parseFloat(string(resp.AppendArg(nil, arg)))
		assert.Equal(t, wantOK, gotOK, "argFloat(%#v) ok", arg)
		assert.Equal(t, want, got, "argFloat(%#v)", arg)
	}
}
