package main

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/gomodule/redigo/redis"

	"github.com/redisalive/redisalive"
)

// Thresholds of the server checks.
const (
	// maxKeepalive is Redis's own default tcp-keepalive. Redis probes after
	// that long and drops a silent client after about twice it, 10 min;
	// longer lets a zombie take items for longer.
	maxKeepalive = 300 * time.Second
	// Of maxclients: past half, every client reconnecting at once while
	// the server still holds their old connections would not fit; past
	// 90%, ordinary churn (a deploy starting new processes before the old
	// ones close) reaches the limit.
	clientsWarnShare = 0.5
	clientsFailShare = 0.9
	// longIdle is how long a client may sit silent before it looks
	// forgotten. Pools PING or close idle connections within minutes (a
	// redisalive pool PINGs each every HealthCheckInterval, 15 s, and
	// closes it after IdleTimeout, 5 min); an hour leaves room for any
	// sensible idle timeout.
	longIdle = time.Hour
	// longBlock is how long a client may stay blocked before it looks
	// like a block without limit (BRPOP key 0). Clients that block in
	// rounds re-issue their command well within it (a redisalive pool
	// every BlockSlice, 1 s).
	longBlock = 10 * time.Minute
)

// server runs the doctor's commands through its pool.
type server struct {
	p       *redisalive.Pool
	timeout time.Duration // of each command: what a Do with no deadline may take
}

// do runs one command, bounded like a Do with no deadline of its own even
// when ctx has none.
func (s server) do(ctx context.Context, cmd string, args ...any) (any, error) {
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	return s.p.Do(ctx, cmd, args...)
}

// reach checks that the server answers a PING within DialTimeout: connect,
// TLS, AUTH and SELECT included, so that an address nobody answers at
// fails no later than a dial would.
func (s server) reach(ctx context.Context, o redisalive.Options) error {
	ctx, cancel := context.WithTimeout(ctx, o.DialTimeout)
	defer cancel()
	where := o.Addr
	if o.Sentinel != nil {
		where = fmt.Sprintf("master %q (through its sentinels)", o.Sentinel.MasterName)
	}
	if _, err := s.p.Do(ctx, "PING"); errors.Is(err, redisalive.ErrMisconfigured) {
		return fmt.Errorf("%s refuses this URL's settings: %w", where, err)
	} else if err != nil {
		return fmt.Errorf("cannot reach %s (a PING within dial_timeout %v): %w", where, o.DialTimeout, err)
	}
	return nil
}

// facts is what the server said. Something that could not be read is
// replaced by the error that says why, for its check to report.
type facts struct {
	info       map[string]string // INFO fields, such as redis_version
	infoErr    error
	settings   map[string]setting
	clients    []client // CLIENT LIST
	clientsErr error
}

// setting is a server setting in whole units (seconds, clients), or why
// it could not be read.
type setting struct {
	n   int64
	err error
}

// client is a line of CLIENT LIST, the fields the checks use.
type client struct {
	id, addr, name, cmd, flags string
	age, idle                  time.Duration
}

// read gathers everything the server checks need, one command at a time.
func (s server) read(ctx context.Context) facts {
	f := facts{settings: map[string]setting{}}
	reply, err := redis.String(s.do(ctx, "INFO"))
	f.info = parseInfo(reply)
	if err != nil {
		f.infoErr = fmt.Errorf("INFO: %w", err)
	}
	for _, name := range []string{"tcp-keepalive", "timeout", "maxclients"} {
		f.settings[name] = s.setting(ctx, name, f.info)
	}
	list, err := redis.String(s.do(ctx, "CLIENT", "LIST"))
	switch f.clients = parseClientList(list); {
	case err != nil:
		f.clientsErr = fmt.Errorf("CLIENT LIST: %w", err)
	case f.clients == nil:
		f.clientsErr = fmt.Errorf("CLIENT LIST: unexpected reply %q", list)
	}
	return f
}

// setting reads a setting from INFO when it is there, which needs no
// permission to run CONFIG, else with CONFIG GET.
func (s server) setting(ctx context.Context, name string, info map[string]string) setting {
	v, ok := info[name]
	if !ok {
		m, err := redis.StringMap(s.do(ctx, "CONFIG", "GET", name))
		if err != nil {
			return setting{err: fmt.Errorf("CONFIG GET %s: %w", name, err)}
		}
		if v, ok = m[name]; !ok {
			return setting{err: fmt.Errorf("CONFIG GET %s: not in the reply %q", name, m)}
		}
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil {
		return setting{err: fmt.Errorf("%s %q is not a whole number", name, v)}
	}
	return setting{n: n}
}

// parseInfo reads the "field:value" lines of an INFO reply.
func parseInfo(reply string) map[string]string {
	fields := map[string]string{}
	for line := range strings.Lines(reply) {
		if k, v, ok := strings.Cut(strings.TrimSpace(line), ":"); ok && !strings.HasPrefix(k, "#") {
			fields[k] = v
		}
	}
	return fields
}

// parseClientList reads CLIENT LIST's lines of space-separated key=value
// fields; none of the fields read here can contain a space. It returns nil
// if a line has no id.
func parseClientList(reply string) []client {
	clients := []client{}
	for line := range strings.Lines(reply) {
		kv := map[string]string{}
		for _, field := range strings.Fields(line) {
			k, v, _ := strings.Cut(field, "=")
			kv[k] = v
		}
		if kv["id"] == "" {
			return nil
		}
		seconds := func(k string) time.Duration {
			n, _ := strconv.ParseInt(kv[k], 10, 64)
			return time.Duration(n) * time.Second
		}
		clients = append(clients, client{
			id: kv["id"], addr: kv["addr"], name: kv["name"], cmd: kv["cmd"], flags: kv["flags"],
			age: seconds("age"), idle: seconds("idle"),
		})
	}
	return clients
}

// serverFindings judges the server by what it said, in the order the
// output lists them.
func serverFindings(f facts, o redisalive.Options) []finding {
	s := f.settings
	return []finding{
		checkVersion(f.info["redis_version"], f.infoErr, o.BlockSlice),
		checkKeepalive(s["tcp-keepalive"]),
		checkTimeout(s["timeout"], o),
		checkMaxclients(f.info["connected_clients"], f.infoErr, s["maxclients"]),
		checkIdle(f.clients, f.clientsErr),
		checkBlocked(f.clients, f.clientsErr),
	}
}

// notChecked is the finding of a check whose input could not be read: a
// warning, since what it would have found can still bite.
func notChecked(check string, err error) finding {
	return finding{Check: check, Level: levelWarn, Value: "unknown",
		Why: fmt.Sprintf("could not be read (%v)", err),
		Fix: "let the URL's user run INFO, CONFIG GET and CLIENT LIST, or check this setting another way (a managed service's console)"}
}

// checkVersion compares the server's version with the commands the pool
// sends it.
func checkVersion(version string, infoErr error, blockSlice time.Duration) finding {
	const check = "server.version"
	if infoErr != nil {
		return notChecked(check, infoErr)
	}
	var major, minor int
	if _, err := fmt.Sscanf(version, "%d.%d", &major, &minor); err != nil {
		return notChecked(check, fmt.Errorf("INFO redis_version %q: %w", version, err))
	}
	f := finding{Check: check, Value: version}
	switch {
	case major < 6 && blockSlice < time.Second:
		f.Level = levelFail
		f.Why = fmt.Sprintf("the pool's block_slice %v sends blocking reads a fractional timeout, which Redis before 6.0 rejects: every BRPop, Queue and blocking Do fails", blockSlice)
		f.Fix = "block_slice=1s in the URL, or upgrade Redis"
	case major < 6 || major == 6 && minor < 2:
		f.Level = levelWarn
		f.Why = "Pool.BLMove and Queue use BLMOVE, new in Redis 6.2: they fail on this server"
		f.Fix = "upgrade Redis to 6.2 or later before using Queue or BLMove"
	default:
		f.Level = levelOK
		f.Why = "supports everything the pool sends (BLMOVE, fractional block timeouts)"
	}
	return f
}

// redisSeconds shows a setting Redis counts in seconds as an operator
// would set it; for tcp-keepalive and timeout, 0 means off.
func redisSeconds(n int64) string {
	if n == 0 {
		return "0 (off)"
	}
	return strconv.FormatInt(n, 10) + "s"
}

// redisProbeInterval is how often a Redis server with tcp-keepalive d
// probes a silent client after the first probe, sent after d of quiet: a
// third of d, in whole seconds, at least 1 s. Three unanswered probes end
// the connection, so it ends d + 3 intervals after the last traffic.
func redisProbeInterval(d time.Duration) time.Duration {
	return max((d / 3).Truncate(time.Second), time.Second)
}

// checkKeepalive judges how long the server keeps the connection of a
// client that vanished.
func checkKeepalive(s setting) finding {
	const check = "server.tcp-keepalive"
	if s.err != nil {
		return notChecked(check, s.err)
	}
	d := time.Duration(s.n) * time.Second
	interval := redisProbeInterval(d)
	probes := fmt.Sprintf("a probe after %v of quiet, then every %v; 3 unanswered end it", d, interval)
	f := finding{Check: check, Value: redisSeconds(s.n)}
	const fix = "CONFIG SET tcp-keepalive 60, and tcp-keepalive 60 in redis.conf so that a restart keeps it"
	switch {
	case d == 0:
		f.Level = levelFail
		f.Why = "the server never probes its clients, so it keeps the connection of one that vanished without a FIN or RST (crash, power loss, partition) for ever: " +
			"a zombie blocked in BRPOP keeps taking items nobody receives, and dead connections pile up towards maxclients"
		f.Fix = fix
	case d > maxKeepalive:
		f.Level = levelWarn
		f.Why = fmt.Sprintf("the server drops a client that vanished only after about %v (%s); until then a zombie blocked in BRPOP can take items nobody receives",
			d+3*interval, probes)
		f.Fix = fix + " (Redis's default is 300)"
	default:
		f.Level = levelOK
		f.Why = fmt.Sprintf("the server drops a client that vanished within about %v (%s)", d+3*interval, probes)
	}
	return f
}

// checkTimeout judges the server's timeout against the pool: an idle pool
// connection is silent at most HealthCheckInterval (its PING then resets
// the server's idle clock) or IdleTimeout (the pool then closes it),
// whichever is shorter. Redis closes a connection only after strictly more
// than timeout seconds of silence, so a timeout longer than that never
// closes one.
func checkTimeout(s setting, o redisalive.Options) finding {
	const check = "server.timeout"
	if s.err != nil {
		return notChecked(check, s.err)
	}
	d := time.Duration(s.n) * time.Second
	quiet := min(o.HealthCheckInterval, o.IdleTimeout)
	f := finding{Check: check, Value: fmt.Sprintf("%s; pool: health_check_interval %v, idle_timeout %v", redisSeconds(s.n), o.HealthCheckInterval, o.IdleTimeout)}
	switch {
	case d == 0:
		f.Level = levelWarn
		f.Why = "the server never closes idle connections: one a client forgot (a pool never closed, a leaked connection) holds a slot of maxclients until its process exits, " +
			"and for ever if the client vanished while tcp-keepalive is 0; pools of this URL are unaffected"
		f.Fix = fmt.Sprintf("CONFIG SET timeout 3600, and timeout 3600 in redis.conf, if every client copes with a server-closed idle connection; "+
			"redisalive pools do, and a pool of this URL PINGs or closes an idle connection within %v, so any timeout above that costs it nothing", quiet)
	case d <= quiet:
		f.Level = levelWarn
		f.Why = fmt.Sprintf("the server closes a pool connection idle for %v before the pool PINGs or closes it (after %v); "+
			"the pool sees each close within about a second and never lends a closed connection, so this is harmless churn, a reconnect after every quiet spell, not a failure", d, quiet)
		f.Fix = fmt.Sprintf("CONFIG SET timeout 300, or health_check_interval below %v in the URL", d)
	default:
		f.Level = levelOK
		f.Why = fmt.Sprintf("the server reaps connections silent for %v, such as those of clients that forgot them; a pool of this URL PINGs or closes an idle connection after %v, so it never loses one to it", d, quiet)
	}
	return f
}

// checkMaxclients judges the headroom left under maxclients.
func checkMaxclients(connected string, infoErr error, limit setting) finding {
	const check = "server.maxclients"
	switch {
	case infoErr != nil:
		return notChecked(check, infoErr)
	case limit.err != nil:
		return notChecked(check, limit.err)
	}
	n, err := strconv.ParseInt(connected, 10, 64)
	if err != nil || limit.n <= 0 {
		return notChecked(check, fmt.Errorf("INFO connected_clients %q, maxclients %d", connected, limit.n))
	}
	share := float64(n) / float64(limit.n)
	f := finding{Check: check, Value: fmt.Sprintf("%d of %d connected (%.1f%%, this doctor included)", n, limit.n, 100*share)}
	const refused = "past maxclients the server refuses new connections (ERR max number of clients reached)"
	switch {
	case share >= clientsFailShare:
		f.Level = levelFail
		f.Why = refused + "; this close, a deploy that starts new processes before the old ones close, or a few more leaked connections, reaches the limit"
	case share >= clientsWarnShare:
		f.Level = levelWarn
		f.Why = refused + "; past half, a reconnect storm (every client redialling after a network blip while the server still holds the old connections until tcp-keepalive ends them) reaches the limit"
	default:
		f.Level = levelOK
		f.Why = refused + "; under half, even every client reconnecting at once while the server still holds the old connections fits"
	}
	if f.Level != levelOK {
		f.Fix = "find who holds the connections (CLIENT LIST; see clients.idle), close pools on shutdown, or raise maxclients (CONFIG SET maxclients, within the server's open-files limit)"
	}
	return f
}

// checkIdle looks for connections silent for longer than any pool keeps
// one: forgotten, or half-open. Blocked clients, subscribers and
// replication links are silent by design and left out.
func checkIdle(clients []client, err error) finding {
	const check = "clients.idle"
	if err != nil {
		return notChecked(check, err)
	}
	var long []client
	for _, c := range clients {
		if c.idle >= longIdle && !strings.ContainsAny(c.flags, "bPSM") {
			long = append(long, c)
		}
	}
	f := finding{Check: check, Value: fmt.Sprintf("%d of %d idle for %v or more", len(long), len(clients), longIdle)}
	if len(long) == 0 {
		f.Level = levelOK
		f.Why = "no connection is silent for longer than pools keep idle ones, so none looks forgotten"
		return f
	}
	oldest := long[0]
	for _, c := range long {
		if c.idle > oldest.idle {
			oldest = c
		}
	}
	f.Level = levelWarn
	f.Value += fmt.Sprintf(", longest %v: %s", oldest.idle, oldest)
	f.Why = "pools PING or close idle connections within minutes, so these were forgotten (a pool never closed, a connection never returned) " +
		"or, while tcp-keepalive is 0, belong to clients that vanished; each holds a slot of maxclients and server memory"
	f.Fix = "find the owners by addr and name in CLIENT LIST and close their pools on shutdown; CLIENT KILL ID <id> ends one now, the server's timeout reaps them"
	return f
}

// checkBlocked looks for clients blocked for longer than a client that
// blocks in rounds ever is: a block without limit, which on a vanished
// client's connection takes the next item and loses it.
func checkBlocked(clients []client, err error) finding {
	const check = "clients.blocked"
	if err != nil {
		return notChecked(check, err)
	}
	var blocked, long int
	var oldest client
	for _, c := range clients {
		if !strings.Contains(c.flags, "b") {
			continue
		}
		blocked++
		if c.idle >= longBlock {
			long++
		}
		if blocked == 1 || c.idle > oldest.idle {
			oldest = c
		}
	}
	f := finding{Check: check, Level: levelOK, Value: fmt.Sprintf("%d blocked", blocked)}
	if blocked > 0 {
		f.Value += fmt.Sprintf(", %d for %v or more, longest %v: %s", long, longBlock, oldest.idle, oldest)
	}
	if long == 0 {
		f.Why = fmt.Sprintf("no client is blocked for %v, as clients that block in rounds never are; one blocked without limit (BRPOP key 0) takes the next item even after its client vanished", longBlock)
		return f
	}
	f.Level = levelWarn
	f.Why = "these block without limit (BRPOP key 0) or for very long: if such a client vanished, its connection takes the next item pushed and the item is lost, " +
		"until the server's tcp-keepalive drops it; age is how long each has been connected"
	f.Fix = "block in rounds (redisalive's BRPop or Queue, or a finite timeout re-issued) and keep tcp-keepalive on; CLIENT KILL ID <id> ends a zombie now"
	return f
}

// String describes a client for an operator to find it: by id to kill it,
// by addr and name to find its owner.
func (c client) String() string {
	s := "id=" + c.id + " addr=" + c.addr
	if c.name != "" {
		s += " name=" + c.name
	}
	return fmt.Sprintf("%s cmd=%s age=%v", s, c.cmd, c.age)
}
