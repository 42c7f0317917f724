package redisalive

import (
	"cmp"
	"crypto/tls"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/gomodule/redigo/redis"

	"github.com/redisalive/redisalive/internal/resp"
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

	// ErrInvalidOptions is matched by every *OptionError, and by the
	// errors of NewQueue for a backend or name it cannot use.
	ErrInvalidOptions = errors.New("redisalive: invalid options")

	// ErrMisconfigured is matched by the *DialError of a new connection
	// that the server refused for the pool's own configuration, which no
	// retry can mend: AUTH refused (WRONGPASS, or NOAUTH when the server
	// wants a password and none is set), SELECT refused (ERR DB index is
	// out of range, NOPERM), a peer that does not speak RESP (not a Redis
	// server: the port of something else), or a TLS handshake that failed
	// on the certificate or the protocol. Every caller gets it at once,
	// blocking reads, Subscribe and Queue.Consume included, where any other
	// dial error is retried. Nothing is remembered: the next call dials
	// again, so a fix on the server (an ACL, say) needs no restart.
	ErrMisconfigured = errors.New("redisalive: the server refused the pool's configuration")

	// ErrInUseAtClose is matched by the error of Close or Shutdown when
	// connections were still checked out at the end of their wait: the
	// pool closed them under their holders, whose next use of them fails
	// with an error matching ErrPoolClosed.
	ErrInUseAtClose = errors.New("redisalive: connections still in use at close")

	// ErrNilContext is returned, rather than a panic deep inside, by every
	// call given a nil context: a bug in the caller, which errors.Is can
	// tell apart from a failure of the server or the network.
	ErrNilContext = errors.New("redisalive: nil context.Context; pass context.Background() or a context with a deadline")

	// ErrInvalidURL is matched by every error of ParseURL. An error for a
	// value that NewPool would reject, such as read_timeout=1ns, also
	// matches ErrInvalidOptions and holds the *OptionError.
	ErrInvalidURL = errors.New("redisalive: invalid Redis URL")

	// ErrProtocol is matched by every *ProtocolError: a reply that breaks
	// the protocol or one of the reader's limits (Options.MaxBulkLen). The
	// connection that read it is closed, never reused.
	ErrProtocol = resp.ErrProtocol

	// errConnReturned is what a connection handle answers after its Close:
	// the socket behind it already belongs to someone else.
	errConnReturned = errors.New("redisalive: use of a connection after Close")

	// errUnexpectedData means a connection has bytes waiting that no
	// command asked for: the protocol is out of step and the connection is
	// unusable. The checkout peek (peek_unix.go) reports it, and so does a
	// pipeline's reader on every GOOS.
	errUnexpectedData = errors.New("redisalive: unexpected data on idle connection")
)

// DialError reports a new connection that could not be opened or
// prepared: the server, the step that failed and why. Every failed dial
// returns one, to the caller whose checkout dialled (Pool.Do, Pool.Get, a
// blocking read, ...). One the server refused for the pool's configuration
// matches ErrMisconfigured and is never retried; the server's own reply
// stays reachable with errors.As (a redis.Error), as does a
// *ProtocolError or a network error. When the caller's context ended the
// dial, it matches that context's error too.
type DialError struct {
	Addr string // the server's address
	// Step is what failed: "connect" (the socket), "TLS handshake", "AUTH"
	// or "SELECT" (refused by the server; NOAUTH, a password required but
	// not set, counts as "AUTH"), or "handshake" (the replies to the
	// connection's first commands never came, or were not RESP).
	Step string
	Err  error // the cause

	misconfigured bool
	ctxErr        error // the context's error, when it ended the dial
}

// Error names the address and the step, and for a configuration error
// what to check.
func (e *DialError) Error() string {
	msg := fmt.Sprintf("redisalive: new connection to %s failed at %s: ", e.Addr, e.Step)
	if e.ctxErr != nil && !errors.Is(e.Err, e.ctxErr) {
		msg += e.ctxErr.Error() + ": "
	}
	msg += e.Err.Error()
	if e.misconfigured {
		msg += " (a configuration error, not retried: " + e.hint() + ")"
	}
	return msg
}

// hint says which setting a configuration error is about.
func (e *DialError) hint() string {
	var re redis.Error
	switch {
	case e.Step == "AUTH" && errors.As(e.Err, &re) && strings.HasPrefix(string(re), "NOAUTH"):
		return "the server requires a password: set Options.Password"
	case e.Step == "AUTH":
		return "check Options.Username and Options.Password against the server's users"
	case e.Step == "SELECT":
		return "check Options.DB against the server's databases setting and the user's ACL"
	case e.Step == "TLS handshake":
		return "check Options.TLSConfig: does the port speak TLS, and is its certificate trusted for that name?"
	}
	return "check Addr and Network: this is not a Redis server's port"
}

// Unwrap lets errors.Is match ErrMisconfigured for a configuration error,
// and the context's error when it ended the dial, and lets errors.As reach
// the cause.
func (e *DialError) Unwrap() []error {
	errs := []error{e.Err}
	if e.misconfigured {
		errs = append(errs, ErrMisconfigured)
	}
	if e.ctxErr != nil {
		errs = append(errs, e.ctxErr)
	}
	return errs
}

// dialError is the *DialError of a dial to addr that failed at step.
func dialError(addr, step string, err error) *DialError {
	return &DialError{Addr: addr, Step: step, Err: err, misconfigured: isMisconfiguration(step, err)}
}

// transientRefusals are the error prefixes of a server that refuses AUTH or
// SELECT for now, not for good.
var transientRefusals = []string{"LOADING", "BUSY", "MASTERDOWN", "TRYAGAIN", "CLUSTERDOWN"}

// isMisconfiguration reports whether a dial failed at step because the
// server refuses the pool's configuration, which retrying cannot mend; a
// socket that cannot connect is not one, since the server may be on its
// way back.
func isMisconfiguration(step string, err error) bool {
	switch step {
	case "AUTH", "SELECT":
		var re redis.Error
		if !errors.As(err, &re) {
			return false
		}
		for _, prefix := range transientRefusals {
			if strings.HasPrefix(string(re), prefix) {
				return false
			}
		}
		return true
	case "handshake":
		return errors.Is(err, ErrProtocol)
	case "TLS handshake":
		var (
			verify *tls.CertificateVerificationError
			record tls.RecordHeaderError
			alert  tls.AlertError
		)
		return errors.As(err, &verify) || errors.As(err, &record) || errors.As(err, &alert)
	}
	return false
}

// retryEnded is the error that ends a retry loop (a blocking read, a
// Subscription's reconnecting, Queue.Consume) by its context or Close: it
// carries the last connection error the loop met, so that a deadline
// spent retrying a dead port says so rather than only that time ran out.
type retryEnded struct {
	err  error // what ended the loop
	last error // the last connection error before it
}

func (e *retryEnded) Error() string {
	return e.err.Error() + " (last connection error: " + e.last.Error() + ")"
}

// Unwrap lets errors.Is match what ended the loop, and errors.As reach the
// last connection error (a *DialError, say).
func (e *retryEnded) Unwrap() []error { return []error{e.err, e.last} }

// inUseAtClose is the error of a Close or Shutdown that closed
// connections still checked out when its wait ended.
type inUseAtClose struct {
	op     string        // "Close" or "Shutdown"
	n      int           // connections closed under their holders
	waited time.Duration // how long Close waited for them
	ctxErr error         // what ended Shutdown's wait
}

func (e *inUseAtClose) Error() string {
	were := fmt.Sprintf("%d connections were", e.n)
	if e.n == 1 {
		were = "1 connection was"
	}
	if e.op == "Shutdown" {
		return fmt.Sprintf("redisalive: Shutdown: %s still checked out when its context ended (%v); "+
			"closed under their holders, whose next use fails with ErrPoolClosed", were, e.ctxErr)
	}
	return fmt.Sprintf("redisalive: Close: %s still checked out after waiting %v, the longest a command in flight takes (Bounds.Close); "+
		"closed under their holders, whose next use fails with ErrPoolClosed (a connection from Get never closed?)", were, e.waited)
}

// Unwrap lets errors.Is match ErrInUseAtClose and, for Shutdown, the
// context's error.
func (e *inUseAtClose) Unwrap() []error {
	if e.ctxErr != nil {
		return []error{ErrInUseAtClose, e.ctxErr}
	}
	return []error{ErrInUseAtClose}
}

// invalidError is an error of NewQueue that matches ErrInvalidOptions
// without repeating its text, as an *OptionError does.
type invalidError struct{ msg string }

func (e *invalidError) Error() string { return e.msg }

// Unwrap lets errors.Is(err, ErrInvalidOptions) match.
func (e *invalidError) Unwrap() error { return ErrInvalidOptions }

// ProtocolError reports a reply that is not RESP or breaks a limit: a
// length past MaxBulkLen, a line too long or nesting too deep, an unknown
// type byte, or a peer that is not a Redis server at all (its Error then
// says so and quotes what the peer sent first). It matches ErrProtocol.
type ProtocolError = resp.ProtocolError

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
	// Subscriptions is how many of InUse open Subscriptions held: each
	// keeps a connection of its own for as long as it is open.
	Subscriptions int
	// BlockingReads is how many of InUse blocking reads held while they
	// waited (BRPop, BLPop, BLMove, blocking commands through Do, and so
	// each handler slot of a running Queue.Consume).
	BlockingReads int
	cause         error // the context's error, when the context ended the wait
}

// Error says how long the caller waited and how busy the pool was, and
// points at the likely cause when every connection was in use: callers
// holding connections, or more Subscriptions and blocking reads than
// MaxActive leaves room for.
func (e *PoolTimeoutError) Error() string {
	msg := fmt.Sprintf("redisalive: no free connection to %s after waiting %v: %d/%d in use",
		e.Addr, e.Waited.Round(time.Millisecond), e.InUse, e.MaxActive)
	var holders []string
	if e.Subscriptions > 0 {
		holders = append(holders, fmt.Sprintf("%d by Subscriptions", e.Subscriptions))
	}
	if e.BlockingReads > 0 {
		holders = append(holders, fmt.Sprintf("%d by blocking reads", e.BlockingReads))
	}
	if len(holders) > 0 {
		msg += " (" + strings.Join(holders, ", ") + ")"
	}
	msg += fmt.Sprintf(", %d other callers waiting", e.Waiting)
	if e.InUse >= e.MaxActive {
		if e.InUse > e.Subscriptions+e.BlockingReads {
			msg += " (pool exhausted: is a caller holding a connection while asking for another?)"
		} else {
			msg += " (pool exhausted: each Subscription and blocking read holds a connection for as long as it runs; raise MaxActive above how many run at once)"
		}
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
