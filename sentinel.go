package redisalive

import (
	"cmp"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/gomodule/redigo/redis"
)

// DefaultSentinelRefreshInterval is how often a pool asks the sentinels
// where the master is, besides acting on their announcements.
const DefaultSentinelRefreshInterval = 10 * time.Second

// SentinelOptions makes a Pool find its master through Redis Sentinel.
type SentinelOptions struct {
	// MasterName is the name the sentinels monitor the master under, as
	// in `sentinel monitor <name> ...`. Required.
	MasterName string
	// Addrs are sentinels, host:port. Required. Sentinels that these know
	// of are added.
	Addrs []string
	// Username and Password authenticate to the sentinels (not to the
	// master: Options.Username and Options.Password do). Zero: no AUTH.
	Username string
	Password string
	// TLSConfig, when set, wraps each connection to a sentinel in TLS.
	// Zero: plain TCP.
	TLSConfig *tls.Config
	// RefreshInterval is how often the sentinels are asked where the
	// master is, besides acting at once on what they announce. Zero:
	// DefaultSentinelRefreshInterval.
	RefreshInterval time.Duration
}

// sentinelConfig is the validated copy of SentinelOptions a pool runs on.
type sentinelConfig struct {
	masterName         string
	addrs              []string
	username, password string
	tls                *tls.Config
	refresh            time.Duration
}

// validate checks o as newConfig does the rest of Options.
func (o *SentinelOptions) validate(addr string) (*sentinelConfig, error) {
	bad := func(field string, v any, reason string) (*sentinelConfig, error) {
		return nil, &OptionError{Field: field, Value: v, Reason: reason}
	}
	if addr != "" {
		return bad("Addr", fmt.Sprintf("%q", addr), "must be empty with Sentinel: the sentinels name the master")
	}
	if o.MasterName == "" {
		return bad("Sentinel.MasterName", `""`, "the name the sentinels monitor the master under is required")
	}
	if len(o.Addrs) == 0 {
		return bad("Sentinel.Addrs", "[]", "at least one sentinel host:port is required")
	}
	for _, a := range o.Addrs {
		if err := checkHostPort(a, "tcp"); err != nil {
			return bad("Sentinel.Addrs", fmt.Sprintf("%q", a), err.Error())
		}
	}
	if o.Username != "" && o.Password == "" {
		return bad("Sentinel.Password", `""`, "a Username needs a Password")
	}
	if o.RefreshInterval < 0 {
		return bad("Sentinel.RefreshInterval", o.RefreshInterval, "must not be negative (zero selects the default)")
	}
	return &sentinelConfig{
		masterName: o.MasterName, addrs: slices.Clone(o.Addrs),
		username: o.Username, password: o.Password, tls: o.TLSConfig,
		refresh: cmp.Or(o.RefreshInterval, DefaultSentinelRefreshInterval),
	}, nil
}

func (c *sentinelConfig) options() *SentinelOptions {
	return &SentinelOptions{
		MasterName: c.masterName, Addrs: slices.Clone(c.addrs),
		Username: c.username, Password: c.password, TLSConfig: c.tls, RefreshInterval: c.refresh,
	}
}

// ErrNoMaster is matched by the *SentinelError of a pool whose sentinels
// name no master: none could be reached, or none knows the master's name.
var ErrNoMaster = errors.New("redisalive: sentinels name no master")

// errUnknownMaster is a sentinel's answer for a master name it does not
// monitor.
var errUnknownMaster = errors.New("does not monitor a master of that name")

// SentinelError reports that no sentinel named the master, with each
// sentinel's answer. It matches ErrNoMaster, and each sentinel's error.
type SentinelError struct {
	MasterName string
	Addrs      []string // the sentinels asked, in order
	Errs       []error  // what each answered
}

// Error lists the sentinels asked and what each answered.
func (e *SentinelError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "redisalive: no sentinel names master %q:", e.MasterName)
	for i, a := range e.Addrs {
		fmt.Fprintf(&b, " %s: %v;", a, e.Errs[i])
	}
	return strings.TrimSuffix(b.String(), ";")
}

// Unwrap lets errors.Is match ErrNoMaster, each sentinel's error, and
// ErrMisconfigured when every sentinel that answered does not know the
// master's name: that is returned at once, never retried.
func (e *SentinelError) Unwrap() []error {
	errs := append([]error{ErrNoMaster}, e.Errs...)
	if e.unknownMaster() {
		errs = append(errs, ErrMisconfigured)
	}
	return errs
}

// unknownMaster reports whether every sentinel that answered said it does
// not know the master, and at least one answered: a misconfiguration
// rather than an outage.
func (e *SentinelError) unknownMaster() bool {
	answered := false
	for _, err := range e.Errs {
		if errors.Is(err, errUnknownMaster) {
			answered = true
		} else if err != nil {
			return false
		}
	}
	return answered
}

// sentinelEvents are the announcements a pool acts on: the leader's choice
// of a replica to promote (the earliest sign that a failover is under way,
// about a second before the rest), the promotion, the switch, a new
// sentinel, and a failover that aborted.
var sentinelEvents = []string{"+selected-slave", "+failover-state-send-slaveof-noone", "+promoted-slave", "+switch-master", "+sentinel"}

const sentinelAbortPattern = "-failover-abort-*"

// sentinels is a pool's view of its sentinels: a small Pool for each,
// which gives its connections the dead-link treatment of any other (PINGs
// while quiet, reconnects with backoff), and a watcher on each, listening
// to its announcements.
type sentinels struct {
	p   *Pool
	cfg *sentinelConfig

	mu     sync.Mutex // guards the fields below
	order  []string   // addresses, the last to answer first
	pools  map[string]*Pool
	closed bool

	refreshing sync.Mutex // one question to the sentinels at a time
	started    sync.Once  // the watchers start with the first connection: NewPool connects to nothing
}

func newSentinels(p *Pool, cfg *sentinelConfig) *sentinels {
	return &sentinels{p: p, cfg: cfg, pools: make(map[string]*Pool)}
}

// start opens the pools of the configured sentinels and watches each, the
// first time it is called.
func (s *sentinels) start() {
	s.started.Do(func() {
		for _, a := range s.cfg.addrs {
			if err := s.add(a); err != nil {
				s.p.cfg.logger.Warn("redisalive: cannot watch a sentinel", "addr", a, "err", err)
			}
		}
		s.p.goBackground(s.refreshLoop)
	})
}

// add opens a pool for the sentinel at addr, unless it has one, and
// watches it.
func (s *sentinels) add(addr string) error {
	main := s.p.cfg
	opts := Options{
		Addr: addr, Username: s.cfg.username, Password: s.cfg.password, TLSConfig: s.cfg.tls,
		DialTimeout: main.dialTimeout, ReadTimeout: main.readTimeout, WriteTimeout: main.writeTimeout,
		KeepAlive: main.keepAlive, TCPUserTimeout: main.userTimeout,
		HealthCheckInterval: main.healthInterval, PubSubPingInterval: main.pingInterval,
		MaxActive: 4, Logger: main.logger,
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed || s.pools[addr] != nil {
		return nil
	}
	sp, err := NewPool(opts)
	if err != nil {
		return fmt.Errorf("redisalive: sentinel %s: %w", addr, err)
	}
	s.pools[addr] = sp
	s.order = append(s.order, addr)
	if !s.p.goBackground(func() { s.watch(sp) }) {
		sp.Close()
		delete(s.pools, addr)
		s.order = s.order[:len(s.order)-1]
	}
	return nil
}

// close closes the sentinels' pools, once the watchers have ended.
func (s *sentinels) close() {
	s.mu.Lock()
	s.closed = true
	pools := s.pools
	s.pools = nil
	s.mu.Unlock()
	for _, sp := range pools {
		sp.Close()
	}
}

// watch listens to one sentinel's announcements until the pool closes.
// Its Subscription reconnects by itself; after a gap, when announcements
// may have been missed, the sentinels are asked again.
func (s *sentinels) watch(sp *Pool) {
	ctx := s.p.closing
	for try := 1; ctx.Err() == nil; try++ {
		sub, err := sp.Subscribe(ctx, sentinelEvents...)
		if err == nil {
			if err = sub.PSubscribe(ctx, sentinelAbortPattern); err == nil {
				try = 0
				s.listen(ctx, sp, sub)
			}
			sub.Close()
		}
		if backoffWait(ctx, ctx, try+1) != nil {
			return
		}
	}
}

// listen handles sub's messages until it fails.
func (s *sentinels) listen(ctx context.Context, sp *Pool, sub *Subscription) {
	s.discover(ctx, sp)
	for {
		m, err := sub.Receive(ctx)
		switch {
		case errors.Is(err, ErrMessagesLost):
			s.discover(ctx, sp)
			s.refresh(ctx, "a sentinel's announcements were interrupted")
			continue
		case err != nil:
			return
		}
		s.handle(ctx, m)
	}
}

// handle acts on one announcement.
func (s *sentinels) handle(ctx context.Context, m Message) {
	payload := string(m.Data)
	name := s.cfg.masterName
	switch ch := m.Channel; {
	case ch == "+switch-master":
		// <master name> <old ip> <old port> <new ip> <new port>
		f := strings.Fields(payload)
		if len(f) == 5 && f[0] == name {
			s.p.switchTo(net.JoinHostPort(f[3], f[4]), "", false, ch)
		}
	case ch == "+selected-slave" || ch == "+failover-state-send-slaveof-noone":
		if in, ok := parseInstance(payload); ok && in.master == name {
			s.p.switchTo(in.addr, in.masterAddr, true, ch)
		}
	case ch == "+promoted-slave":
		if in, ok := parseInstance(payload); ok && in.master == name {
			s.p.switchTo(in.addr, "", false, ch)
		}
	case ch == "+sentinel":
		if in, ok := parseInstance(payload); ok && in.master == name {
			if err := s.add(in.addr); err != nil {
				s.p.cfg.logger.Warn("redisalive: cannot watch a sentinel", "addr", in.addr, "err", err)
			}
		}
	case strings.HasPrefix(ch, "-failover-abort"):
		if in, ok := parseInstance(payload); ok && in.name == name {
			s.refresh(ctx, ch)
		}
	}
}

// instance is a sentinel's description of a server in its announcements:
// "<kind> <name> <ip> <port> @ <master name> <master ip> <master port>",
// or "master <name> <ip> <port>" for a master.
type instance struct {
	kind, name, addr   string
	master, masterAddr string
}

func parseInstance(s string) (instance, bool) {
	f := strings.Fields(s)
	if len(f) < 4 {
		return instance{}, false
	}
	in := instance{kind: f[0], name: f[1], addr: net.JoinHostPort(f[2], f[3])}
	if in.kind == "master" {
		in.master, in.masterAddr = in.name, in.addr
		return in, true
	}
	if len(f) != 8 || f[4] != "@" {
		return instance{}, false
	}
	in.master, in.masterAddr = f[5], net.JoinHostPort(f[6], f[7])
	return in, true
}

// discover adds the sentinels that sp's sentinel knows of.
func (s *sentinels) discover(ctx context.Context, sp *Pool) {
	qctx, cancel := context.WithTimeout(ctx, s.p.cfg.dialTimeout)
	defer cancel()
	peers, err := redis.Values(sp.Do(qctx, "SENTINEL", "SENTINELS", s.cfg.masterName))
	if err != nil {
		return
	}
	for _, peer := range peers {
		fields, err := redis.StringMap(peer, nil)
		if err != nil || fields["ip"] == "" || fields["port"] == "" {
			continue
		}
		if err := s.add(net.JoinHostPort(fields["ip"], fields["port"])); err != nil {
			s.p.cfg.logger.Warn("redisalive: cannot watch a sentinel", "addr", fields["ip"]+":"+fields["port"], "err", err)
		}
	}
}

// refreshLoop asks the sentinels where the master is every
// RefreshInterval, in case announcements were missed.
func (s *sentinels) refreshLoop() {
	t := time.NewTicker(s.cfg.refresh)
	defer t.Stop()
	for {
		select {
		case <-s.p.closing.Done():
			return
		case <-t.C:
			s.refresh(s.p.closing, "periodic")
		}
	}
}

// refresh asks the sentinels where the master is and moves the pool there.
// While a replica is being promoted, the sentinels still name the old
// master until the switch: their answer is taken only once the promotion
// has taken longer than promotionWait, or has been aborted.
func (s *sentinels) refresh(ctx context.Context, why string) error {
	s.refreshing.Lock()
	defer s.refreshing.Unlock()
	t := s.p.current()
	addr, err := s.ask(ctx)
	if err != nil {
		return err
	}
	if !t.ready() && time.Since(t.since) < promotionWait && !strings.HasPrefix(why, "-failover-abort") {
		return nil
	}
	s.p.switchTo(addr, "", false, "sentinels name it ("+why+")")
	return nil
}

// ask asks the sentinels, in turn, where the master is, each bounded by
// DialTimeout; the first to answer is asked first next time.
func (s *sentinels) ask(ctx context.Context) (string, error) {
	s.mu.Lock()
	order := slices.Clone(s.order)
	s.mu.Unlock()
	e := &SentinelError{MasterName: s.cfg.masterName}
	for _, a := range order {
		s.mu.Lock()
		sp := s.pools[a]
		s.mu.Unlock()
		if sp == nil {
			continue
		}
		qctx, cancel := context.WithTimeout(ctx, s.p.cfg.dialTimeout)
		reply, err := redis.Strings(sp.Do(qctx, "SENTINEL", "GET-MASTER-ADDR-BY-NAME", s.cfg.masterName))
		cancel()
		switch {
		case errors.Is(err, redis.ErrNil):
			err = errUnknownMaster
		case err == nil && len(reply) != 2:
			err = fmt.Errorf("unexpected reply %q", reply)
		case err == nil:
			s.prefer(a)
			return net.JoinHostPort(reply[0], reply[1]), nil
		}
		e.Addrs, e.Errs = append(e.Addrs, a), append(e.Errs, err)
		if ctx.Err() != nil {
			break
		}
	}
	return "", e
}

// prefer moves addr to the front of the sentinels asked.
func (s *sentinels) prefer(addr string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if i := slices.Index(s.order, addr); i > 0 {
		s.order = slices.Insert(slices.Delete(s.order, i, i+1), 0, addr)
	}
}
