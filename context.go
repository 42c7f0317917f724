package redisalive

import (
	"context"
	"errors"
	"time"
)

// canceled reports whether ctx was cancelled, not timed out: a dial it cut
// short is the caller's doing (a shutdown, say), not a failure to count.
func canceled(ctx context.Context) bool { return errors.Is(ctx.Err(), context.Canceled) }

// ctxErr is ctx's error, or DeadlineExceeded once its deadline has passed
// even if its timer has not fired yet: a socket deadline set from it can
// beat the timer, and what ended the call is still the caller's deadline.
func ctxErr(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if d, ok := ctx.Deadline(); ok && !time.Now().Before(d) {
		return context.DeadlineExceeded
	}
	return nil
}
