package redisalive

import (
	"context"
	"time"
)

// Hook observes a pool's events, for metrics and tracing: the modules
// extra/redisaliveotel and extra/redisaliveprom are built on it. Every
// field is optional. Hooks run on the goroutine of the event, often the
// caller's, so they must be quick; they may read Stats. Some run on the
// pool's own goroutines (the health checker's, a Subscription's, the
// AutoPipeline connections'), which Close waits for: a hook must not call
// the pool's Close or Shutdown, nor a Subscription's Close, or it waits
// for itself. To close the pool on some event, do it from another
// goroutine.
type Hook struct {
	// Command is called before each command a caller runs through
	// Pool.Do, the blocking reads (BRPop, BLPop, BLMove) or Do, DoContext
	// and DoWithTimeout on a connection from Get; not before the pool's own
	// commands (health PINGs and the like). It returns the context to run
	// the command with: the caller's, or one carrying a span, say; nil
	// stands for the caller's.
	Command func(ctx context.Context, cmd string) context.Context
	// CommandDone is called when such a command returns, with the context
	// this hook's Command returned (the caller's if it has none), how long
	// the command took from checkout to reply, and its error.
	CommandDone func(ctx context.Context, cmd string, took time.Duration, err error)
	// Checkout is called when a checkout ends, with how long it took to
	// get a connection (waiting for a free one, checking an idle one,
	// dialling a new one) and its error.
	Checkout func(ctx context.Context, took time.Duration, err error)
	// Dial is called after each attempt to open a connection.
	Dial func(ctx context.Context, took time.Duration, err error)
	// Use is called when a caller returns a connection, with how long it
	// held it.
	Use func(held time.Duration)
	// Closed is called when the pool closes a connection, with why; not
	// for the connections Close and Shutdown close.
	Closed func(reason CloseReason)
	// Redial is called when a round of a blocking read failed on the
	// network and the read goes on on a new connection.
	Redial func(ctx context.Context, cmd string, err error)
	// Failover is called when the pool moves to a new master, from the
	// address it leaves to the one it goes to (the same, for a server
	// demoted under a fixed address). It runs on the goroutine that learnt
	// of the move: a sentinel watcher's, or a caller's.
	Failover func(from, to string)
	// PoolClosing is called once, when the pool's Close or Shutdown
	// begins, so that a hook can release what it holds for the pool. The
	// Close or Shutdown that calls it is still running: calling either
	// again from here waits for it, that is, for ever or until its ctx
	// ends.
	PoolClosing func()
}

// AddHook adds h to the pool's hooks. Hooks run in the order they were
// added (Command hooks nest: the first is outermost) and cannot be
// removed. With no hook, an event costs one atomic load.
func (p *Pool) AddHook(h Hook) {
	for {
		old := p.hooks.Load()
		var hooks []Hook
		if old != nil {
			hooks = append(hooks, *old...)
		}
		hooks = append(hooks, h)
		if p.hooks.CompareAndSwap(old, &hooks) {
			return
		}
	}
}

// underHooks runs run, a caller's command, under the Command hooks: they
// see it begin and end, and may hand it a context of their own. With no
// hook it runs as it is, for the cost of one atomic load.
func (p *Pool) underHooks(ctx context.Context, cmd string, run func(ctx context.Context) (any, error)) (reply any, err error) {
	if p.hooks.Load() == nil {
		return run(ctx)
	}
	var hooked commandHooks
	ctx = p.beforeCommand(ctx, cmd, &hooked)
	defer func() { p.afterCommand(cmd, &hooked, err) }()
	return run(ctx)
}

// commandHooks carries a command's hook state from before to after it:
// each hook's own context, inline for the usual few hooks.
type commandHooks struct {
	start time.Time
	ctxs  []context.Context
	inl   [4]context.Context
}

// beforeCommand runs the Command hooks before a caller's command and
// returns the context to run it with.
func (p *Pool) beforeCommand(ctx context.Context, cmd string, h *commandHooks) context.Context {
	hooks := *p.hooks.Load()
	h.start = time.Now()
	h.ctxs = h.inl[:0]
	for i := range hooks {
		if hooks[i].Command != nil {
			if hctx := hooks[i].Command(ctx, cmd); hctx != nil {
				ctx = hctx
			}
		}
		h.ctxs = append(h.ctxs, ctx)
	}
	return ctx
}

// afterCommand runs the CommandDone hooks, the last added first, as
// deferred calls would.
func (p *Pool) afterCommand(cmd string, h *commandHooks, err error) {
	hooks := *p.hooks.Load()
	took := time.Since(h.start)
	for i := min(len(hooks), len(h.ctxs)) - 1; i >= 0; i-- {
		if hooks[i].CommandDone != nil {
			hooks[i].CommandDone(h.ctxs[i], cmd, took, err)
		}
	}
}

// each calls f for every hook, if there are any.
func (p *Pool) each(f func(h *Hook)) {
	if hooks := p.hooks.Load(); hooks != nil {
		for i := range *hooks {
			f(&(*hooks)[i])
		}
	}
}
