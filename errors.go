package redisalive

import (
	"cmp"
	"errors"
	"fmt"
	"time"
)

var (
	// ErrPoolClosed is returned by every call on a pool after Close or
	// Shutdown has begun.
	ErrPoolClosed = errors.New("redisalive: pool is closed")

	// ErrPoolTimeout is returned when no connection became free before the
	// checkout deadline. The concrete error is a *PoolTimeoutError, which
	// describes the pool at the moment the wait gave up.
	ErrPoolTimeout = errors.New("redisalive: timed out waiting for a free connection")

	// ErrCrossSlot is returned, before anything is sent, for a Cluster
	// command whose keys hash to different slots, which the cluster would
	// refuse with CROSSSLOT. Give such keys a common hash tag: {user1}.a
	// and {user1}.b share a slot.
	ErrCrossSlot = errors.New("redisalive: cluster: keys in different slots")

	// ErrSubscriptionClosed is returned by a Subscription's methods after
	// its Close.
	ErrSubscriptionClosed = errors.New("redisalive: subscription is closed")

	// ErrMessagesLost is matched by the *GapError that Subscription.Receive
	// returns after a reconnect: Pub/Sub messages published meanwhile were
	// lost.
	ErrMessagesLost = errors.New("redisalive: Pub/Sub messages lost while reconnecting")

	// ErrInvalidOptions is matched by every *OptionError.
	ErrInvalidOptions = errors.New("redisalive: invalid options")

	// errNilContext is returned, rather than a panic deep inside, by every
	// call given a nil context.
	errNilContext = errors.New("redisalive: nil context.Context; pass context.Background() or a context with a deadline")

	// ErrInvalidURL is matched by every error of ParseURL. An error for a
	// value that NewPool would reject, such as read_timeout=1ns, also
	// matches ErrInvalidOptions and holds the *OptionError.
	ErrInvalidURL = errors.New("redisalive: invalid Redis URL")

	// errConnReturned is what a connection handle answers after its Close:
	// the socket behind it already belongs to someone else.
	errConnReturned = errors.New("redisalive: use of a connection after Close")
)

// PoolTimeoutError reports a checkout that gave up waiting for a free
// connection. Its message carries the pool's state because the usual cause
// is not a slow server but callers holding every connection, for example a
// function that holds one connection while asking for a second one.
type PoolTimeoutError struct {
	Addr      string        // server address
	Waited    time.Duration // how long the caller waited
	InUse     int           // connections checked out at the moment the wait ended
	MaxActive int           // the pool's size limit
	Waiting   int           // other callers still waiting
	cause     error         // the context's error, when the context ended the wait
}

// Error says how long the caller waited and how busy the pool was, and
// points at the usual cause when every connection was in use.
func (e *PoolTimeoutError) Error() string {
	msg := fmt.Sprintf("redisalive: no free connection to %s after waiting %v: %d/%d in use, %d other callers waiting",
		e.Addr, e.Waited.Round(time.Millisecond), e.InUse, e.MaxActive, e.Waiting)
	if e.InUse >= e.MaxActive {
		msg += " (pool exhausted: is a caller holding a connection while asking for another?)"
	}
	if e.cause != nil {
		msg += ": " + e.cause.Error()
	}
	return msg
}

// Unwrap lets errors.Is match ErrPoolTimeout and, when the context's
// deadline ended the wait, context.DeadlineExceeded.
func (e *PoolTimeoutError) Unwrap() []error {
	if e.cause != nil {
		return []error{ErrPoolTimeout, e.cause}
	}
	return []error{ErrPoolTimeout}
}

// OptionError reports one invalid field of Options or QueueOptions.
type OptionError struct {
	Field  string // the field, e.g. "MaxIdle" or "KeepAlive.Count"
	Value  any    // the rejected value
	Reason string // what is wrong with it
	of     string // the struct the field belongs to; "" means Options
}

// Error names the struct, the field and the value, and says why it was
// rejected.
func (e *OptionError) Error() string {
	return fmt.Sprintf("redisalive: invalid %s.%s = %v: %s", cmp.Or(e.of, "Options"), e.Field, e.Value, e.Reason)
}

// Unwrap lets errors.Is(err, ErrInvalidOptions) match.
func (e *OptionError) Unwrap() error { return ErrInvalidOptions }

// urlError reports a URL that ParseURL rejected. Its message shows the URL
// with the password hidden, then what is wrong in the URL's own terms.
type urlError struct {
	url    string // redacted
	reason string
	option error // the *OptionError behind reason, if any
}

// Error shows the redacted URL and what is wrong with it.
func (e *urlError) Error() string {
	return fmt.Sprintf("redisalive: parse URL %q: %s", e.url, e.reason)
}

// Unwrap lets errors.Is match ErrInvalidURL and, for a value NewPool would
// reject, ErrInvalidOptions.
func (e *urlError) Unwrap() []error {
	if e.option != nil {
		return []error{ErrInvalidURL, e.option}
	}
	return []error{ErrInvalidURL}
}
