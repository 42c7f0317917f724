package redisalive

import (
	"fmt"
	"math"
	"strings"

	"github.com/gomodule/redigo/redis"

	"github.com/redisalive/redisalive/internal/resp"
	"github.com/redisalive/redisalive/internal/slot"
)

// keySpec is where a command's keys sit among its arguments, as the
// server's COMMAND reply describes it: positions first to last (negative:
// from the end) by step, counting the command name as position 0.
type keySpec struct {
	first, last, step int
	movable           bool               // the positions depend on the arguments
	subs              map[string]keySpec // a container command's subcommands, lowercase
}

// commandTable maps lowercase command names to where their keys sit. It
// comes from the server, so it knows every command of the cluster's
// version, modules' included.
type commandTable map[string]keySpec

// parseCommandTable reads a COMMAND reply: one entry per command, [name,
// arity, flags, first key, last key, step, ...], and from Redis 7 its
// subcommands as entries of the same shape in the tenth field.
func parseCommandTable(reply any) (commandTable, error) {
	entries, err := redis.Values(reply, nil)
	if err != nil {
		return nil, fmt.Errorf("COMMAND reply: %w", err)
	}
	t := make(commandTable, len(entries))
	for _, e := range entries {
		name, spec, err := parseCommandEntry(e)
		if err != nil {
			return nil, err
		}
		t[name] = spec
	}
	return t, nil
}

func parseCommandEntry(e any) (string, keySpec, error) {
	fields, err := redis.Values(e, nil)
	if err != nil || len(fields) < 6 {
		return "", keySpec{}, fmt.Errorf("COMMAND entry %v: want at least 6 fields", e)
	}
	name, err1 := redis.String(fields[0], nil)
	flags, err2 := redis.Strings(fields[2], nil)
	first, err3 := redis.Int(fields[3], nil)
	last, err4 := redis.Int(fields[4], nil)
	step, err5 := redis.Int(fields[5], nil)
	if err := cmpErr(err1, err2, err3, err4, err5); err != nil {
		return "", keySpec{}, fmt.Errorf("COMMAND entry %v: %w", e, err)
	}
	spec := keySpec{first: first, last: last, step: step}
	for _, f := range flags {
		spec.movable = spec.movable || f == "movablekeys"
	}
	if len(fields) >= 10 {
		subs, _ := redis.Values(fields[9], nil)
		for _, s := range subs {
			subName, sub, err := parseCommandEntry(s)
			if err != nil {
				return "", keySpec{}, err
			}
			if spec.subs == nil {
				spec.subs = make(map[string]keySpec, len(subs))
			}
			// "xinfo|stream": the subcommand's own name.
			_, subName, _ = strings.Cut(subName, "|")
			spec.subs[subName] = sub
		}
	}
	return strings.ToLower(name), spec, nil
}

func cmpErr(errs ...error) error {
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

// lookup finds cmd's spec, and a subcommand's for a container command,
// without allocating for names of up to 32 bytes.
func (t commandTable) lookup(cmd string, args []any) (keySpec, bool) {
	spec, ok := t[lowerASCII(cmd)]
	if ok && spec.subs != nil && len(args) > 0 {
		if sub, isString := args[0].(string); isString {
			if s, found := spec.subs[lowerASCII(sub)]; found {
				return s, true
			}
		}
	}
	return spec, ok
}

// lowerASCII lowercases s; the compiler turns the map index of the
// string(bytes) conversion into a lookup without allocation.
func lowerASCII(s string) string {
	var buf [32]byte
	if len(s) > len(buf) {
		return strings.ToLower(s)
	}
	b := buf[:len(s)]
	for i := range len(s) {
		c := s[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		b[i] = c
	}
	return string(b)
}

// slotOf returns the hash slot all of a command's keys share: -1 for a
// command without keys, which may run on any node; an error matching
// ErrCrossSlot if they span slots. getKeys asks a server which arguments
// are keys (COMMAND GETKEYS), for the rare command whose keys move with
// its arguments in a way this table cannot follow.
func (t commandTable) slotOf(cmd string, args []any, getKeys func() ([]any, error)) (int, error) {
	spec, ok := t.lookup(cmd, args)
	if !ok {
		return -1, nil // unknown here: let the server say so
	}
	keys, err := spec.keys(cmd, args, getKeys)
	if err != nil {
		return 0, err
	}
	return sameSlot(cmd, keys)
}

// keys returns a command's keys.
func (s keySpec) keys(cmd string, args []any, getKeys func() ([]any, error)) ([]any, error) {
	if s.movable {
		if keys, ok := movableKeys(lowerASCII(cmd), args); ok {
			return keys, nil
		}
		return getKeys()
	}
	if s.first <= 0 || s.step <= 0 {
		return nil, nil
	}
	last := s.last // in the command's positions, where the name is 0
	if last < 0 {
		last += len(args) + 1
	}
	var keys []any
	// A step past the arguments ends the loop as the server's would;
	// capped, a huge one from a malformed COMMAND reply cannot overflow.
	for pos := s.first; pos <= last && pos <= len(args); pos += min(s.step, len(args)) {
		keys = append(keys, args[pos-1])
	}
	return keys, nil
}

// movableKeys finds the keys of the common commands whose key positions
// depend on their arguments; ok is false for the others.
func movableKeys(cmd string, args []any) (keys []any, ok bool) {
	counted := func(countAt int) ([]any, bool) {
		if countAt >= len(args) {
			return nil, false
		}
		// A count that is not a whole number, or that runs past the
		// arguments, is the server's to reject.
		n, ok := argFloat(args[countAt])
		rest := args[countAt+1:]
		if !ok || n != math.Trunc(n) || n < 0 || n > float64(len(rest)) {
			return nil, false
		}
		return rest[:int(n)], true
	}
	switch cmd {
	case "eval", "evalsha", "eval_ro", "evalsha_ro", "fcall", "fcall_ro", "blmpop", "bzmpop":
		return counted(1)
	case "zunion", "zinter", "zdiff", "zintercard", "sintercard", "lmpop", "zmpop":
		return counted(0)
	case "zunionstore", "zinterstore", "zdiffstore":
		if keys, ok := counted(1); ok && len(args) > 0 {
			return append([]any{args[0]}, keys...), true
		}
	case "xread":
		keys, _, ok := xreadStreams(args, 0)
		return keys, ok
	case "xreadgroup":
		keys, _, ok := xreadStreams(args, 3)
		return keys, ok
	}
	return nil, false
}

// sameSlot returns the slot the keys share, -1 for no keys.
func sameSlot(cmd string, keys []any) (int, error) {
	s := -1
	for _, k := range keys {
		ks := keySlot(k)
		if s >= 0 && ks != s {
			return 0, fmt.Errorf("%w: %s has keys in slots %d and %d", ErrCrossSlot, cmd, s, ks)
		}
		s = ks
	}
	return s, nil
}

// keySlot is the slot of a key argument, written as redigo would send it:
// a string or []byte as it is, any other as resp.AppendArg writes it.
func keySlot(k any) int {
	switch k := k.(type) {
	case string:
		return slot.Of(k)
	case []byte:
		return slot.Of(k)
	}
	var buf [64]byte
	return slot.Of(resp.AppendArg(buf[:0], k))
}
