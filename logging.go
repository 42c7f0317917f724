package redisalive

import (
	"sync/atomic"
	"time"
)

// warnEvery is the rate limit for "still unreachable" warnings.
const warnEvery = 10 * time.Second

// logLimit lets one log line of a kind through per warnEvery, so that a
// failure repeating for every item or every beat cannot flood the log.
type logLimit struct{ last atomic.Int64 }

func (l *logLimit) allow() bool {
	now := time.Now().UnixNano()
	last := l.last.Load()
	return now-last >= int64(warnEvery) && l.last.CompareAndSwap(last, now)
}

// warnRetry logs a warning of a retry loop (a blocking read, a
// Subscription reconnecting), at most once per warnEvery for the whole
// pool, so that an outage does not flood the log.
func (p *Pool) warnRetry(msg string, args ...any) {
	if p.retryLog.allow() {
		p.cfg.logger.Warn(msg, args...)
	}
}
