package redisalive

import (
	"bytes"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/redisalive/redisalive/internal/resp"
)

// cmdInfo is what the pool must know about a command before sending it:
// what it leaves behind on the connection, and whether and for how long
// the server may hold its reply.
type cmdInfo struct {
	effect effect
	block  blockSpec
}

// effect is what a command does to connection state that outlives it.
type effect uint8

const (
	effNone      effect = iota
	effOpenTx           // WATCH: state a later user must not inherit until closed
	effMulti            // MULTI: as effOpenTx, and commands are queued, not run, until EXEC
	effCloseTx          // EXEC or DISCARD: ends that state
	effUnwatch          // UNWATCH: ends WATCH, but is only queued inside MULTI
	effTaint            // state that cannot be safely undone (SELECT, HELLO, CLIENT REPLY, ...)
	effSubscribe        // SUBSCRIBE, PSUBSCRIBE, SSUBSCRIBE: replies arrive unasked from now on
	effMonitor          // MONITOR: every command the server runs arrives unasked from now on
)

// notThroughDo says why a command with this effect cannot go through
// Pool.Do, which returns its connection to the pool after one reply: what
// arrives later would be lost with the connection. "" for any other.
func (e effect) notThroughDo() string {
	switch e {
	case effSubscribe:
		return "it leaves the connection subscribed, and Do gives it up after one reply, so every message would be lost: use Pool.Subscribe, PSubscribe or SSubscribe, which also reconnect"
	case effMonitor:
		return "the server streams every command to the connection from then on, and Do gives it up after one reply: run it on a connection from Pool.Get and read with Receive"
	}
	return ""
}

// reusable reports whether a connection may go back to the pool after a
// lone command with this effect.
func (e effect) reusable() bool { return e == effNone || e == effCloseTx || e == effUnwatch }

// blockKind says how a blocking command's reply tells that its time ran
// out, which decides whether a round ends the wait.
type blockKind uint8

const (
	notBlocking  blockKind = iota
	blockPop               // BLPOP and kin, XREADGROUP: a nil reply means the time ran out
	blockXRead             // XREAD: as blockPop; a "$" ID must be pinned before re-issuing
	blockWait              // WAIT: fewer replicas than asked means the time ran out
	blockWaitAOF           // WAITAOF: fewer local or replica fsyncs than asked, likewise
)

// blockSpec locates a blocking command's timeout among its arguments.
type blockSpec struct {
	kind blockKind
	arg  int           // index in args of the timeout
	unit time.Duration // time.Second or time.Millisecond
}

// lookupCommand classifies cmd. It allocates nothing: it runs before every
// command, and only a handful of names need more than a length check.
//
// Where Redis's blocking commands carry their timeout:
//
//	BLPOP, BRPOP, BRPOPLPUSH, BLMOVE, BZPOPMIN, BZPOPMAX  last argument, seconds (fractional from Redis 6)
//	BLMPOP, BZMPOP                                       first argument, seconds
//	XREAD, XREADGROUP                                    BLOCK option, milliseconds (no BLOCK: not blocking)
//	WAIT, WAITAOF                                        last argument, milliseconds
//
// A zero timeout blocks until a reply arrives.
func lookupCommand(cmd string, args []any) cmdInfo {
	eq := strings.EqualFold
	last := blockSpec{kind: blockPop, arg: len(args) - 1, unit: time.Second}
	switch len(cmd) {
	case 4:
		switch {
		case eq(cmd, "EXEC"):
			return cmdInfo{effect: effCloseTx}
		case eq(cmd, "AUTH"), eq(cmd, "QUIT"):
			return cmdInfo{effect: effTaint}
		case eq(cmd, "WAIT") && len(args) == 2:
			return cmdInfo{block: blockSpec{kind: blockWait, arg: 1, unit: time.Millisecond}}
		}
	case 5:
		switch {
		case eq(cmd, "MULTI"):
			return cmdInfo{effect: effMulti}
		case eq(cmd, "WATCH"):
			return cmdInfo{effect: effOpenTx}
		case eq(cmd, "HELLO"), eq(cmd, "RESET"):
			return cmdInfo{effect: effTaint}
		case eq(cmd, "BLPOP"), eq(cmd, "BRPOP"):
			if len(args) >= 2 {
				return cmdInfo{block: last}
			}
		case eq(cmd, "XREAD"):
			return cmdInfo{block: xreadBlock(blockXRead, args, 0)}
		}
	case 6:
		switch {
		case eq(cmd, "SELECT"), eq(cmd, "ASKING"):
			// ASKING applies to the connection's next command, whoever runs it.
			return cmdInfo{effect: effTaint}
		case eq(cmd, "CLIENT") && len(args) > 0:
			// CLIENT REPLY OFF|SKIP and CLIENT TRACKING change what later
			// commands receive.
			if argIs(args[0], "REPLY") || argIs(args[0], "TRACKING") {
				return cmdInfo{effect: effTaint}
			}
		case eq(cmd, "BLMOVE"):
			if len(args) == 5 {
				return cmdInfo{block: last}
			}
		case eq(cmd, "BLMPOP"), eq(cmd, "BZMPOP"):
			if len(args) >= 3 {
				return cmdInfo{block: blockSpec{kind: blockPop, arg: 0, unit: time.Second}}
			}
		}
	case 7:
		switch {
		case eq(cmd, "DISCARD"):
			return cmdInfo{effect: effCloseTx}
		case eq(cmd, "UNWATCH"):
			return cmdInfo{effect: effUnwatch}
		case eq(cmd, "MONITOR"):
			return cmdInfo{effect: effMonitor}
		case eq(cmd, "WAITAOF") && len(args) == 3:
			return cmdInfo{block: blockSpec{kind: blockWaitAOF, arg: 2, unit: time.Millisecond}}
		}
	case 8:
		switch {
		case (eq(cmd, "BZPOPMIN") || eq(cmd, "BZPOPMAX")) && len(args) >= 2:
			return cmdInfo{block: last}
		case eq(cmd, "READONLY"):
			return cmdInfo{effect: effTaint}
		}
	case 9:
		if eq(cmd, "READWRITE") {
			return cmdInfo{effect: effTaint}
		}
		if eq(cmd, "SUBSCRIBE") {
			return cmdInfo{effect: effSubscribe}
		}
	case 10:
		switch {
		case eq(cmd, "PSUBSCRIBE"), eq(cmd, "SSUBSCRIBE"):
			return cmdInfo{effect: effSubscribe}
		case eq(cmd, "BRPOPLPUSH"):
			if len(args) == 3 {
				return cmdInfo{block: last}
			}
		case eq(cmd, "XREADGROUP"):
			// GROUP group consumer precede the options.
			return cmdInfo{block: xreadBlock(blockPop, args, 3)}
		}
	}
	return cmdInfo{}
}

// xreadOption returns the index of the keyword kw among the options of
// XREAD (from args[0]) or XREADGROUP (from args[3], past GROUP group
// consumer), which end at STREAMS; -1 if it is not there.
func xreadOption(args []any, from int, kw string) int {
	for i := from; i < len(args); i++ {
		switch {
		case argIs(args[i], kw):
			return i
		case argIs(args[i], "STREAMS"):
			return -1
		case argIs(args[i], "COUNT"), argIs(args[i], "BLOCK"):
			i++ // skip the value, which could read as a keyword only by accident
		}
	}
	return -1
}

// xreadBlock finds the BLOCK option of XREAD or XREADGROUP.
func xreadBlock(kind blockKind, args []any, from int) blockSpec {
	if i := xreadOption(args, from, "BLOCK"); i >= 0 && i+1 < len(args) {
		return blockSpec{kind: kind, arg: i + 1, unit: time.Millisecond}
	}
	return blockSpec{}
}

// xreadStreams splits the arguments after STREAMS into keys and IDs. ok is
// false when there is no STREAMS or its keys and IDs do not pair up, which
// the server rejects.
func xreadStreams(args []any, from int) (keys, ids []any, ok bool) {
	i := xreadOption(args, from, "STREAMS")
	if i < 0 {
		return nil, nil, false
	}
	rest := args[i+1:]
	if len(rest) == 0 || len(rest)%2 != 0 {
		return nil, nil, false
	}
	return rest[:len(rest)/2], rest[len(rest)/2:], true
}

// argIs reports whether a command argument is the keyword kw, in any case.
func argIs(arg any, kw string) bool {
	switch a := arg.(type) {
	case string:
		return strings.EqualFold(a, kw)
	case []byte:
		return bytes.EqualFold(a, []byte(kw))
	}
	return false
}

// maxBlock is the longest wait treated as finite; a timeout beyond it
// blocks until a reply arrives, and stays clear of time.Duration's
// overflow.
const maxBlock = 100 * 365 * 24 * time.Hour

// maxServerTimeoutMillis is about the largest timeout Redis accepts: it
// adds the timeout to the time in milliseconds since 1970 and refuses a
// sum past 2^63-1. The margin, 2^42 ms, stands for that time until 2109.
const maxServerTimeoutMillis = math.MaxInt64 - 1<<42

// blockTime returns how long the command asks the server to block: 0 for
// until a reply arrives. ok is false when the timeout is not a valid
// non-negative number, or one too large for the server; the server then
// rejects the command at once, so the pool treats it as an ordinary
// command.
func (s blockSpec) blockTime(args []any) (d time.Duration, ok bool) {
	f, ok := argFloat(args[s.arg])
	if !ok || math.IsNaN(f) || f < 0 {
		return 0, false
	}
	if s.unit == time.Millisecond && f != math.Trunc(f) {
		return 0, false // Redis wants whole milliseconds
	}
	if f*float64(s.unit/time.Millisecond) > maxServerTimeoutMillis {
		return 0, false
	}
	ns := f * float64(s.unit)
	if ns >= float64(maxBlock) {
		return 0, true
	}
	// Redis rounds a fractional millisecond up; so does the pool, so that
	// it never expects a reply before the server sends it.
	return ceilMillis(time.Duration(math.Ceil(ns))), true
}

// argFloat reads a numeric command argument as redigo would send it: the
// common types directly, any other as resp.AppendArg writes it.
func argFloat(arg any) (float64, bool) {
	switch a := arg.(type) {
	case string:
		return parseFloat(a)
	case []byte:
		return parseFloat(string(a))
	case int:
		return float64(a), true
	case int64:
		return float64(a), true
	case float64:
		return a, true
	}
	var buf [64]byte
	return parseFloat(string(resp.AppendArg(buf[:0], arg)))
}

func parseFloat(s string) (float64, bool) {
	f, err := strconv.ParseFloat(s, 64)
	return f, err == nil
}

// formatTimeout writes d in unit as a command argument: whole units as an
// integer, which every Redis version accepts, else a decimal (Redis 6+).
func formatTimeout(d, unit time.Duration) string {
	if d%unit == 0 {
		return strconv.FormatInt(int64(d/unit), 10)
	}
	return strconv.FormatFloat(float64(d)/float64(unit), 'f', -1, 64)
}
