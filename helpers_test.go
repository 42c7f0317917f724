package redisalive_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gomodule/redigo/redis"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/redisalive/redisalive"
	"github.com/redisalive/redisalive/internal/redistest"
	"github.com/redisalive/redisalive/internal/testkit"
)

// blockGrace is the library's documented read grace past each blocking
// round's server-side timeout (Options.BlockSlice).
const blockGrace = 500 * time.Millisecond

// silentServer accepts connections and never answers, like a server
// whose replies are lost; it and every connection it accepted are closed
// when the test ends.
func silentServer(t *testing.T) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	})
	t.Cleanup(func() {
		ln.Close()
		wg.Wait()
		for _, c := range conns {
			c.Close()
		}
	})
	return ln
}

// waitForValue polls got every testkit.PollEvery until it returns want; if that
// does not happen within the given time it fails t with the value got
// returned last, not with one read before the wait.
func waitForValue[T comparable](t *testing.T, within time.Duration, what string, want T, got func() T) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		v := got()
		if v == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: got %+v, want %+v within %v", what, v, want, within)
		}
		time.Sleep(testkit.PollEvery)
	}
}

// fillIdle checks out n connections at once, proves each with a PING and
// returns them, leaving n idle connections in a pool nobody else uses.
func fillIdle(t *testing.T, p *redisalive.Pool, n int) {
	t.Helper()
	returnFresh(t, p, n)
	require.Equal(t, n, p.Stats().Idle, "idle connections")
}

// returnFresh checks out n connections at once, proves each with a PING
// and returns them. Other callers of p may hold or return connections
// meanwhile, so at least n are idle right after, not exactly n.
func returnFresh(t *testing.T, p *redisalive.Pool, n int) {
	t.Helper()
	conns := make([]redis.Conn, n)
	for i := range conns {
		c, err := p.Get(context.Background())
		require.NoError(t, err)
		conns[i] = c
		_, err = c.Do("PING")
		require.NoError(t, err)
	}
	for _, c := range conns {
		require.NoError(t, c.Close())
	}
}

// clientStates returns the TCP states of the client sockets connected to
// port, e.g. {"ESTABLISHED": 2}.
func clientStates(t *testing.T, port int) map[string]int {
	t.Helper()
	states, err := redistest.TCPStates(port)
	require.NoError(t, err)
	return states
}

// formatURL writes o as a Redis URL, the inverse of ParseURL for the
// Options ParseURL returns: a database goes in the path, every other
// non-zero setting in the query.
func formatURL(o redisalive.Options) string {
	u := &url.URL{Scheme: "redis", Host: o.Addr}
	if o.TLSConfig != nil {
		u.Scheme = "rediss"
	}
	q := url.Values{}
	if o.Network == "unix" {
		u.Scheme, u.Host, u.Path = "unix", "", o.Addr
		// url.URL leaves an '@' in a path as it is, which ParseURL rejects
		// as ambiguous: it takes one only %-escaped.
		u.RawPath = strings.ReplaceAll(u.EscapedPath(), "@", "%40")
		if o.DB != 0 {
			q.Set("db", strconv.Itoa(o.DB))
		}
	} else if o.DB != 0 {
		u.Path = "/" + strconv.Itoa(o.DB)
	}
	if o.Username != "" || o.Password != "" {
		u.User = url.UserPassword(o.Username, o.Password)
	}
	for key, d := range map[string]time.Duration{
		"dial_timeout": o.DialTimeout, "read_timeout": o.ReadTimeout, "write_timeout": o.WriteTimeout,
		"pool_timeout": o.PoolTimeout, "idle_timeout": o.IdleTimeout, "max_conn_lifetime": o.MaxConnLifetime,
		"health_check_interval": o.HealthCheckInterval, "block_slice": o.BlockSlice, "tcp_user_timeout": o.TCPUserTimeout,
	} {
		if d != 0 {
			q.Set(key, d.String())
		}
	}
	for key, n := range map[string]int{"max_active": o.MaxActive, "max_idle": o.MaxIdle} {
		if n != 0 {
			q.Set(key, strconv.Itoa(n))
		}
	}
	if s := o.Sentinel; s != nil {
		u.Scheme, u.Path = "redis+sentinel", "/"+s.MasterName
		if o.TLSConfig != nil {
			u.Scheme = "rediss+sentinel"
		}
		if o.DB != 0 {
			u.Path += "/" + strconv.Itoa(o.DB)
		}
		hosts := make([]string, len(s.Addrs))
		for i, a := range s.Addrs {
			host, port, _ := net.SplitHostPort(a)
			hosts[i] = net.JoinHostPort(strings.ReplaceAll(host, "%", "%25"), port)
		}
		u.Host = "sentinels" // url.URL takes one host: the list goes in below
		for key, v := range map[string]string{"sentinel_username": s.Username, "sentinel_password": s.Password} {
			if v != "" {
				q.Set(key, v)
			}
		}
		if s.RefreshInterval != 0 {
			q.Set("sentinel_refresh_interval", s.RefreshInterval.String())
		}
		u.RawQuery = q.Encode()
		return strings.Replace(u.String(), "sentinels", strings.Join(hosts, ","), 1)
	}
	u.RawQuery = q.Encode()
	return u.String()
}

// hostileServer stands in front of a real redis-server and forwards every
// command and reply, except that it answers a command naming the key
// "hostile" with a reply of its own, as a confused or malicious peer would
// (and closes the connection after it, if asked), and Inject sends that
// reply unasked to every connection. The connections it makes after a
// hostile reply reach the real server as before.
type hostileServer struct {
	ln       net.Listener
	upstream string
	reply    string
	hangUp   bool

	wg    sync.WaitGroup
	mu    sync.Mutex
	conns map[*hostileConn]struct{}
}

type hostileConn struct {
	client, up net.Conn
	wmu        sync.Mutex // serialises writes to client
}

// newHostileServer starts a hostileServer in front of upstream, stopped
// with everything it started when t ends.
func newHostileServer(t *testing.T, upstream, reply string, hangUp bool) *hostileServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	s := &hostileServer{ln: ln, upstream: upstream, reply: reply, hangUp: hangUp, conns: make(map[*hostileConn]struct{})}
	s.wg.Go(s.accept)
	t.Cleanup(s.stop)
	return s
}

func (s *hostileServer) addr() string { return s.ln.Addr().String() }

func (s *hostileServer) accept() {
	for {
		client, err := s.ln.Accept()
		if err != nil {
			return
		}
		up, err := net.Dial("tcp", s.upstream)
		if err != nil {
			client.Close()
			continue
		}
		c := &hostileConn{client: client, up: up}
		s.mu.Lock()
		s.conns[c] = struct{}{}
		s.mu.Unlock()
		s.wg.Go(func() {
			buf := make([]byte, 32<<10)
			for {
				n, err := up.Read(buf)
				if n > 0 {
					c.wmu.Lock()
					_, werr := client.Write(buf[:n])
					c.wmu.Unlock()
					if werr != nil {
						break
					}
				}
				if err != nil {
					break
				}
			}
			client.Close()
		})
		s.wg.Go(func() { s.serve(c) })
	}
}

// serve forwards c's commands upstream, answering the hostile ones itself.
func (s *hostileServer) serve(c *hostileConn) {
	defer func() {
		c.client.Close()
		c.up.Close()
		s.mu.Lock()
		delete(s.conns, c)
		s.mu.Unlock()
	}()
	r := bufio.NewReader(c.client)
	for {
		raw, args, err := readRawCommand(r)
		if err != nil {
			return
		}
		if !slices.Contains(args, "hostile") {
			if _, err := c.up.Write(raw); err != nil {
				return
			}
			continue
		}
		c.wmu.Lock()
		_, err = c.client.Write([]byte(s.reply))
		c.wmu.Unlock()
		if err != nil || s.hangUp {
			return
		}
	}
}

// Inject sends the hostile reply, unasked, to every connection.
func (s *hostileServer) Inject() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for c := range s.conns {
		c.wmu.Lock()
		c.client.Write([]byte(s.reply))
		c.wmu.Unlock()
		if s.hangUp {
			c.client.Close()
		}
	}
}

func (s *hostileServer) stop() {
	s.ln.Close()
	s.mu.Lock()
	for c := range s.conns {
		c.client.Close()
		c.up.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
}

// readRawCommand reads one command, an array of bulk strings, returning
// its bytes as sent and its arguments.
func readRawCommand(r *bufio.Reader) (raw []byte, args []string, err error) {
	// header reads a line "<kind><n>\r\n" into raw and returns n.
	header := func(kind byte) (int, error) {
		line, err := r.ReadSlice('\n')
		if err != nil {
			return 0, err
		}
		raw = append(raw, line...)
		n, err := strconv.Atoi(strings.TrimSpace(string(line[1:])))
		if err != nil || line[0] != kind {
			return 0, fmt.Errorf("hostileServer: got %q, want a %q header", line, kind)
		}
		return n, nil
	}
	n, err := header('*')
	if err != nil {
		return nil, nil, err
	}
	for range n {
		size, err := header('$')
		if err != nil {
			return nil, nil, err
		}
		b := make([]byte, size+2)
		if _, err := io.ReadFull(r, b); err != nil {
			return nil, nil, err
		}
		raw = append(raw, b...)
		args = append(args, string(b[:size]))
	}
	return raw, args, nil
}

// failoverRun drives a writer and a consumer through a failover as a user
// writes them, and measures what a failover costs them: the writer SETs
// w:<i> every 10 ms with Do and a background context, the consumer loops
// on BRPop.
type failoverRun struct {
	p     *redisalive.Pool
	stop  chan struct{} // stops the writer
	wrote chan struct{} // closed when the writer has stopped
	wg    sync.WaitGroup
	got   chan string // what the consumer popped

	mu     sync.Mutex
	acked  []ackedWrite
	failed []error
}

type ackedWrite struct {
	i  int
	at time.Time
}

// failoverResult is what a failover cost the writer and the consumer.
type failoverResult struct {
	Outage   time.Duration // the longest gap between two acknowledged writes that survive
	Lost     int           // writes acknowledged but absent from the new master
	Failed   int           // writes that returned an error
	Consumer time.Duration // from an LPUSH on the new master to the consumer having it
	Acked    int
}

// startFailoverRun starts the writer and the consumer on p.
func startFailoverRun(t *testing.T, p *redisalive.Pool) *failoverRun {
	t.Helper()
	r := &failoverRun{p: p, stop: make(chan struct{}), wrote: make(chan struct{}), got: make(chan string, 16)}
	ctx, cancel := context.WithCancel(context.Background())
	r.wg.Go(func() {
		defer close(r.wrote)
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		for i := 0; i < 100_000; i++ {
			select {
			case <-r.stop:
				return
			case <-tick.C:
			}
			_, err := p.Do(context.Background(), "SET", fmt.Sprintf("w:%d", i), i)
			r.mu.Lock()
			if err == nil {
				r.acked = append(r.acked, ackedWrite{i, time.Now()})
			} else {
				r.failed = append(r.failed, err)
			}
			r.mu.Unlock()
		}
	})
	r.wg.Go(func() {
		for ctx.Err() == nil {
			if _, v, err := p.BRPop(ctx, "failover-queue"); err == nil {
				r.got <- v
			}
		}
	})
	t.Cleanup(func() {
		r.halt()
		cancel()
		r.wg.Wait()
	})
	// Both running before the failover.
	testkit.WaitFor(t, 5*time.Second, "the writer's first acknowledged write", func() bool {
		r.mu.Lock()
		defer r.mu.Unlock()
		return len(r.acked) > 0
	})
	return r
}

func (r *failoverRun) halt() {
	select {
	case <-r.stop:
	default:
		close(r.stop)
	}
}

// finish measures the consumer's recovery on master, stops the writer, and
// checks which acknowledged writes master has.
func (r *failoverRun) finish(t *testing.T, master *redistest.Server) failoverResult {
	t.Helper()
	pushed := time.Now()
	master.Do(t, "LPUSH", "failover-queue", "after")
	var res failoverResult
	select {
	case v := <-r.got:
		res.Consumer = time.Since(pushed)
		assert.Equal(t, "after", v, "the consumer's item")
	case <-time.After(10 * time.Second):
		t.Fatalf("the consumer did not get an item pushed on the new master within 10 s")
	}
	time.Sleep(300 * time.Millisecond) // the writer goes on a little on the new master
	r.halt()
	<-r.wrote
	r.mu.Lock()
	acked, failed := slices.Clone(r.acked), slices.Clone(r.failed)
	r.mu.Unlock()
	res.Acked, res.Failed = len(acked), len(failed)
	for _, err := range failed[:min(3, len(failed))] {
		t.Logf("a failed write: %v", err)
	}
	survived := make([]bool, len(acked))
	for start := 0; start < len(acked); start += 500 {
		batch := acked[start:min(start+500, len(acked))]
		keys := make([]any, len(batch))
		for i, w := range batch {
			keys[i] = fmt.Sprintf("w:%d", w.i)
		}
		vals, err := redis.Values(master.Do(t, "MGET", keys...), nil)
		require.NoError(t, err)
		for i, v := range vals {
			survived[start+i] = v != nil
		}
	}
	var last time.Time
	for i, w := range acked {
		if !survived[i] {
			res.Lost++
			t.Logf("lost: w:%d, acknowledged at %s", w.i, w.at.Format("15:04:05.000000"))
			continue
		}
		if !last.IsZero() {
			res.Outage = max(res.Outage, w.at.Sub(last))
		}
		last = w.at
	}
	t.Logf("failover: outage %v, %d of %d acknowledged writes lost, %d failed, consumer %v",
		res.Outage.Round(time.Millisecond), res.Lost, res.Acked, res.Failed, res.Consumer.Round(time.Millisecond))
	return res
}

// ourClients counts the connections on srv that are neither a sentinel's
// nor a replica's: a client's, such as the pool's.
func ourClients(t *testing.T, srv *redistest.Server) int {
	t.Helper()
	list, err := redis.String(srv.Do(t, "CLIENT", "LIST"), nil)
	require.NoError(t, err)
	n := 0
	for line := range strings.Lines(list) {
		if strings.Contains(line, " flags=N ") && strings.Contains(line, " name= ") && !strings.Contains(line, " cmd=client|list ") {
			n++
		}
	}
	return n
}

// httpServer stands for a port that speaks something other than RESP: it
// answers whatever it is sent with an HTTP error and hangs up, as a proxy
// or a web server does. It is closed when the test ends.
func httpServer(t *testing.T) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() {
				defer c.Close()
				c.SetDeadline(time.Now().Add(5 * time.Second))
				buf := make([]byte, 4096)
				if _, err := c.Read(buf); err != nil {
					return
				}
				io.WriteString(c, "HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
			})
		}
	})
	t.Cleanup(func() {
		ln.Close()
		wg.Wait()
	})
	return ln
}

// returnsWithin runs call and returns how long it took and its error; it
// fails t if call has not returned within the given time. The caller must
// make sure that the call ends when the test does (a pool closed by
// Cleanup, say).
func returnsWithin(t *testing.T, within time.Duration, what string, call func() error) (time.Duration, error) {
	t.Helper()
	done := make(chan error, 1)
	start := time.Now()
	go func() { done <- call() }()
	select {
	case err := <-done:
		return time.Since(start), err
	case <-time.After(within):
		t.Fatalf("%s: still running after %v, want it to return", what, within)
		return 0, nil
	}
}

// startWithPassword starts a redis-server whose default user needs
// password. Its admin methods (Do, ConnectedClients, ...) no longer work:
// they send no AUTH.
func startWithPassword(t *testing.T, password string) *redistest.Server {
	t.Helper()
	srv := redistest.Start(t)
	srv.Do(t, "CONFIG", "SET", "requirepass", password)
	return srv
}
