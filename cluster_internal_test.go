package redisalive

import (
	"math"
	"testing"

	"github.com/gomodule/redigo/redis"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestRedirectOfReadsMovedAndAsk(t *testing.T) {
	to, ok := redirectOf(redis.Error("MOVED 3999 10.0.0.2:6381"), "10.0.0.1:6379")
	require.True(t, ok)
	assert.Equal(t, redirect{slot: 3999, addr: "10.0.0.2:6381"}, to)
	to, ok = redirectOf(redis.Error("ASK 12 :6380"), "10.0.0.1:6379")
	require.True(t, ok)
	assert.Equal(t, redirect{ask: true, slot: 12, addr: "10.0.0.1:6380"}, to, "an empty host is the replying node's")
	// Redis writes an IPv6 address without brackets; the pools are keyed
	// by net.JoinHostPort's form.
	for reply, want := range map[string]string{
		"MOVED 3999 ::1:6381":              "[::1]:6381",
		"MOVED 3999 [::1]:6381":            "[::1]:6381",
		"MOVED 3999 fe80::2:1:6381":        "[fe80::2:1]:6381",
		"MOVED 3999 2001:db8::7:6381":      "[2001:db8::7]:6381",
		"MOVED 3999 :6381":                 "[2001:db8::1]:6381",
		"MOVED 3999 redis-2.internal:6381": "redis-2.internal:6381",
	} {
		to, ok := redirectOf(redis.Error(reply), "[2001:db8::1]:6379")
		require.True(t, ok, reply)
		assert.Equal(t, redirect{slot: 3999, addr: want}, to, reply)
	}
	for _, err := range []error{nil, redis.Error("ERR wrong"), redis.Error("MOVED x h:1"), redis.Error("CROSSSLOT Keys")} {
		_, ok := redirectOf(err, "h:1")
		assert.False(t, ok, "%v", err)
	}
}

func TestMovableKeysOfTheCommonCommands(t *testing.T) {
	cases := []struct {
		cmd  string
		args []any
		keys []any
	}{
		{"eval", []any{"script", 2, "a", "b", "arg"}, []any{"a", "b"}},
		{"fcall_ro", []any{"fn", "1", "a"}, []any{"a"}},
		{"zunion", []any{2, "a", "b", "WITHSCORES"}, []any{"a", "b"}},
		{"zunionstore", []any{"dst", 2, "a", "b"}, []any{"dst", "a", "b"}},
		{"blmpop", []any{0, 2, "a", "b", "LEFT"}, []any{"a", "b"}},
		{"xreadgroup", []any{"GROUP", "g", "c", "STREAMS", "s1", "s2", ">", ">"}, []any{"s1", "s2"}},
		{"xreadgroup", []any{"GROUP", "STREAMS", "c", "COUNT", 2, "STREAMS", "s1", ">"}, []any{"s1"}},
		{"xread", []any{"COUNT", "1", "BLOCK", "0", "STREAMS", "s1", "STREAMS", "$", "$"}, []any{"s1", "STREAMS"}},
	}
	for _, tc := range cases {
		keys, ok := movableKeys(tc.cmd, tc.args)
		assert.True(t, ok, tc.cmd)
		assert.Equal(t, tc.keys, keys, tc.cmd)
	}
	for _, n := range []any{5, -1, "1.5", "NaN", "Inf", "1e30", math.NaN(), math.Inf(1), 1e300, "x", nil} {
		_, ok := movableKeys("eval", []any{"script", n, "a"})
		assert.False(t, ok, "a key count of %v is left to the server", n)
	}
	_, ok := movableKeys("xread", []any{"STREAMS", "a", "b", "$"})
	assert.False(t, ok, "keys and IDs that do not pair up are left to the server")
	_, ok = movableKeys("sort", []any{"k", "STORE", "d"})
	assert.False(t, ok, "others are asked of the server with COMMAND GETKEYS")
}

func TestKeySlotHashesAKeyAsRedigoWritesIt(t *testing.T) {
	for _, tc := range []struct {
		key     any
		written string
	}{{true, "1"}, {false, "0"}, {nil, ""}, {42, "42"}, {int64(-7), "-7"}, {1.5, "1.5"}, {[]byte("k"), "k"}} {
		assert.Equal(t, keySlot(tc.written), keySlot(tc.key), "%#v", tc.key)
	}
}

func TestCommandTableFindsKeysOfCommandsAndSubcommands(t *testing.T) {
	entry := func(name string, first, last, step int64, subs ...any) []any {
		e := []any{[]byte(name), int64(-2), []any{}, first, last, step, []any{}, []any{}, []any{}}
		return append(e, subs)
	}
	table, err := parseCommandTable([]any{
		entry("get", 1, 1, 1),
		entry("mset", 1, -1, 2),
		entry("xinfo", 0, 0, 0, entry("xinfo|stream", 2, 2, 1)),
	})
	require.NoError(t, err)
	noGetKeys := func() ([]any, error) { t.Fatal("asked the server"); return nil, nil }
	s, err := table.slotOf("GET", []any{"{a}x"}, noGetKeys)
	require.NoError(t, err)
	assert.Equal(t, keySlot("a"), s)
	_, err = table.slotOf("MSET", []any{"{a}1", "v", "{b}2", "v"}, noGetKeys)
	assert.ErrorIs(t, err, ErrCrossSlot)
	s, err = table.slotOf("XINFO", []any{"STREAM", "{a}s"}, noGetKeys)
	require.NoError(t, err)
	assert.Equal(t, keySlot("a"), s, "the subcommand's key")
	s, err = table.slotOf("PING", nil, noGetKeys)
	require.NoError(t, err)
	assert.Equal(t, -1, s, "unknown here: no keys")
}
