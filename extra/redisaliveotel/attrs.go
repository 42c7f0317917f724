package redisaliveotel

import (
	"context"
	"errors"
	"io"
	"maps"
	"os"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/gomodule/redigo/redis"
	"go.opentelemetry.io/otel/attribute"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"

	"github.com/redisalive/redisalive"
)

// outcome is how a command ended, in the terms of its attributes; the zero
// value is success.
type outcome struct {
	errType    string // error.type
	statusCode string // db.response.status_code: the prefix of a Redis error reply
}

// classify names the class of err as the package doc describes: low
// cardinality, so that it can label a metric.
func classify(err error) outcome {
	if err == nil {
		return outcome{} // most commands: return before reply below escapes to the heap
	}
	var reply redis.Error
	switch {
	case errors.As(err, &reply):
		if prefix := errorPrefix(string(reply)); prefix != "" {
			return outcome{errType: prefix, statusCode: prefix}
		}
		return outcome{errType: semconv.ErrorTypeOther.Value.AsString()}
	case errors.Is(err, redisalive.ErrPoolTimeout): // before DeadlineExceeded, which it can match too
		return outcome{errType: "pool_timeout"}
	case errors.Is(err, redisalive.ErrPoolClosed):
		return outcome{errType: "pool_closed"}
	case errors.Is(err, context.Canceled):
		return outcome{errType: "canceled"}
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, os.ErrDeadlineExceeded):
		return outcome{errType: "timeout"}
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return outcome{errType: "eof"}
	default:
		return outcome{errType: semconv.ErrorType(err).Value.AsString()}
	}
}

// errorPrefix returns the first word of a Redis error reply, such as ERR
// or WRONGTYPE, or "" if that word is not an upper-case prefix: a script's
// reply can start with anything, and a label must not take whole
// messages.
func errorPrefix(msg string) string {
	prefix, _, _ := strings.Cut(msg, " ")
	if prefix == "" || len(prefix) > 32 {
		return ""
	}
	for _, r := range prefix {
		if (r < 'A' || r > 'Z') && r != '_' {
			return ""
		}
	}
	return prefix
}

// attrs are the outcome's attributes: none for success.
func (o outcome) attrs() []attribute.KeyValue {
	switch {
	case o.errType == "":
		return nil
	case o.statusCode != "":
		return []attribute.KeyValue{semconv.ErrorTypeKey.String(o.errType), semconv.DBResponseStatusCode(o.statusCode)}
	default:
		return []attribute.KeyValue{semconv.ErrorTypeKey.String(o.errType)}
	}
}

// opKey is a command as the caller named it, and how it ended.
type opKey struct {
	cmd string
	outcome
}

// maxCached bounds each cache, so that command names built from input
// cannot grow it without end; past it, entries are built per event.
const maxCached = 512

// cache holds what is built once per command and outcome (attribute sets,
// span options), so that an event allocates nothing for them. Readers take
// no lock: a new entry replaces the whole map.
type cache[V any] struct {
	entries atomic.Pointer[map[opKey]V]
	mu      sync.Mutex // serialises adding entries
	build   func(opKey) V
}

func newCache[V any](build func(opKey) V) *cache[V] {
	return &cache[V]{build: build}
}

func (c *cache[V]) get(k opKey) V {
	if m := c.entries.Load(); m != nil {
		if v, ok := (*m)[k]; ok {
			return v
		}
	}
	return c.add(k)
}

func (c *cache[V]) add(k opKey) V {
	c.mu.Lock()
	defer c.mu.Unlock()
	old := c.entries.Load()
	if old != nil {
		if v, ok := (*old)[k]; ok {
			return v
		}
	}
	// The caller's strings may be slices of larger ones (an error
	// message); a kept entry must not pin those.
	k.cmd, k.errType, k.statusCode = strings.Clone(k.cmd), strings.Clone(k.errType), strings.Clone(k.statusCode)
	v := c.build(k)
	if old != nil && len(*old) >= maxCached {
		return v
	}
	m := make(map[opKey]V, 1)
	if old != nil {
		m = maps.Clone(*old)
	}
	m[k] = v
	c.entries.Store(&m)
	return v
}
