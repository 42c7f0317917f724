package faultproxy

import (
	"errors"
	"io"
	"net"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// silence is how long a read must stay blocked to count as "nothing arrives".
const silence = 200 * time.Millisecond

// patience bounds every wait for something that should arrive.
const patience = 5 * time.Second

// startServer runs handle on every connection accepted on a loopback
// listener until the test ends, and returns the listener's address.
func startServer(t *testing.T, handle func(net.Conn)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var (
		wg     sync.WaitGroup
		mu     sync.Mutex
		conns  = make(map[net.Conn]struct{})
		closed bool
	)
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			if closed {
				mu.Unlock()
				c.Close()
				continue
			}
			conns[c] = struct{}{}
			mu.Unlock()
			wg.Go(func() {
				defer c.Close()
				handle(c)
			})
		}
	})
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		closed = true
		for c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return ln.Addr().String()
}

func echo(c net.Conn) { io.Copy(c, c) }

// setup starts a proxy in front of a server running handle. Cleanups run in
// reverse, so the leak check runs last, after the proxy and server are closed.
func setup(t *testing.T, handle func(net.Conn)) *Proxy {
	t.Helper()
	t.Cleanup(func() { goleak.VerifyNone(t) })
	p, err := New(startServer(t, handle))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

func dial(t *testing.T, p *Proxy) net.Conn {
	t.Helper()
	c, err := net.DialTimeout("tcp", p.Addr(), patience)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func write(t *testing.T, c net.Conn, msg string) {
	t.Helper()
	if _, err := c.Write([]byte(msg)); err != nil {
		t.Fatalf("write %q: %v", msg, err)
	}
}

func expect(t *testing.T, c net.Conn, want string) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(patience))
	got := make([]byte, len(want))
	if _, err := io.ReadFull(c, got); err != nil {
		t.Fatalf("read %q: %v", want, err)
	}
	if string(got) != want {
		t.Fatalf("read %q, want %q", got, want)
	}
}

func roundTrip(t *testing.T, c net.Conn, msg string) {
	t.Helper()
	write(t, c, msg)
	expect(t, c, msg)
}

// expectSilence checks that a read times out: no data and no EOF or reset.
func expectSilence(t *testing.T, c net.Conn) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(silence))
	if _, err := c.Read(make([]byte, 1)); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read error %v, want a timeout", err)
	}
}

// expectEnd checks that a read fails promptly, with an error matching want
// if it is not nil.
func expectEnd(t *testing.T, c net.Conn, want error) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(patience))
	_, err := c.Read(make([]byte, 1))
	switch {
	case err == nil || errors.Is(err, os.ErrDeadlineExceeded):
		t.Fatalf("read error %v, want the connection to end", err)
	case want != nil && !errors.Is(err, want):
		t.Fatalf("read error %v, want %v", err, want)
	}
}

func expectCount(t *testing.T, what string, got, want int) {
	t.Helper()
	if got != want {
		t.Fatalf("%s = %d, want %d", what, got, want)
	}
}

func expectAtLeast(t *testing.T, elapsed, want time.Duration) {
	t.Helper()
	if elapsed < want {
		t.Fatalf("took %v, want at least %v", elapsed, want)
	}
}

func TestForward(t *testing.T) {
	p := setup(t, echo)
	a, b := dial(t, p), dial(t, p)
	roundTrip(t, a, "hello")
	roundTrip(t, b, "world")
	roundTrip(t, a, "again")
	expectCount(t, "Conns", p.Conns(), 2)
	expectCount(t, "Accepted", p.Accepted(), 2)
}

func TestBlackholeQueuesUntilHeal(t *testing.T) {
	p := setup(t, echo)
	established := dial(t, p)
	roundTrip(t, established, "up")

	p.Blackhole()
	write(t, established, "queued")
	expectSilence(t, established)
	pending := dial(t, p)
	write(t, pending, "pending")
	expectSilence(t, pending)

	p.Heal()
	expect(t, established, "queued")
	expect(t, pending, "pending")
	expectCount(t, "Accepted", p.Accepted(), 2)
}

func TestForgetLeavesClientHalfOpen(t *testing.T) {
	p := setup(t, echo)
	forgotten := dial(t, p)
	roundTrip(t, forgotten, "up")

	p.Forget()
	write(t, forgotten, "into the void")
	expectSilence(t, forgotten)
	write(t, forgotten, "still accepted")
	expectSilence(t, forgotten)

	fresh := dial(t, p)
	roundTrip(t, fresh, "new")
	expectCount(t, "Conns", p.Conns(), 2)

	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	expectEnd(t, forgotten, nil)
	expectCount(t, "Conns", p.Conns(), 0)
}

func TestResetAll(t *testing.T) {
	p := setup(t, echo)
	c := dial(t, p)
	roundTrip(t, c, "up")

	p.ResetAll()
	expectCount(t, "Conns", p.Conns(), 0)
	expectEnd(t, c, syscall.ECONNRESET)

	roundTrip(t, dial(t, p), "new")
}

func TestLatency(t *testing.T) {
	const d = 100 * time.Millisecond
	p := setup(t, echo)
	c := dial(t, p)
	roundTrip(t, c, "up")

	p.SetLatency(d)
	start := time.Now()
	roundTrip(t, c, "slow")
	expectAtLeast(t, time.Since(start), 2*d) // one delay per direction
}

func TestSlowClose(t *testing.T) {
	const d = 300 * time.Millisecond
	p := setup(t, func(net.Conn) {})
	p.SetSlowClose(d)

	start := time.Now()
	c := dial(t, p)
	expectEnd(t, c, io.EOF)
	expectAtLeast(t, time.Since(start), d)
}

func TestCloseWhileBlackholed(t *testing.T) {
	p := setup(t, echo)
	established := dial(t, p)
	roundTrip(t, established, "up")

	p.Blackhole()
	p.SetLatency(time.Hour)
	write(t, established, "stuck")
	pending := dial(t, p)
	expectSilence(t, pending)

	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	expectEnd(t, established, nil)
	expectEnd(t, pending, nil)
}

// recorder echoes what it reads and reports each read on got, so a test can
// tell a request held back on its way to the server from a reply held back
// on its way back.
func recorder(got chan<- string) func(net.Conn) {
	return func(c net.Conn) {
		buf := make([]byte, 64)
		for {
			n, err := c.Read(buf)
			if err != nil {
				return
			}
			got <- string(buf[:n])
			if _, err := c.Write(buf[:n]); err != nil {
				return
			}
		}
	}
}

func expectReceived(t *testing.T, got <-chan string, want string) {
	t.Helper()
	select {
	case s := <-got:
		if s != want {
			t.Fatalf("server read %q, want %q", s, want)
		}
	case <-time.After(patience):
		t.Fatalf("server read nothing within %v, want %q", patience, want)
	}
}

func expectNothingReceived(t *testing.T, got <-chan string) {
	t.Helper()
	select {
	case s := <-got:
		t.Fatalf("server read %q, want nothing", s)
	case <-time.After(silence):
	}
}

func TestBlackholeToClientRunsRequestsButHoldsReplies(t *testing.T) {
	got := make(chan string, 4)
	p := setup(t, recorder(got))
	c := dial(t, p)
	roundTrip(t, c, "up")
	expectReceived(t, got, "up")

	p.BlackholeOneWay(ToClient)
	write(t, c, "request")
	expectReceived(t, got, "request")
	expectSilence(t, c)

	p.Heal()
	expect(t, c, "request")
}

func TestBlackholeToServerHoldsRequests(t *testing.T) {
	got := make(chan string, 4)
	p := setup(t, recorder(got))
	c := dial(t, p)
	roundTrip(t, c, "up")
	expectReceived(t, got, "up")

	p.BlackholeOneWay(ToServer)
	write(t, c, "request")
	expectNothingReceived(t, got)

	p.Heal()
	expectReceived(t, got, "request")
	expect(t, c, "request")
}

func TestRetransmissionHoldsBytesPastHealUntilTheirResendIsDue(t *testing.T) {
	const rto = 100 * time.Millisecond
	p := setup(t, echo)
	p.SetRetransmission(rto)
	c := dial(t, p)
	roundTrip(t, c, "up")

	p.Blackhole()
	sent := time.Now()
	write(t, c, "held")
	time.Sleep(rto + rto/2) // holds the blackhole past the first resend, due at rto
	p.Heal()
	expect(t, c, "held")
	expectAtLeast(t, time.Since(sent), 3*rto) // the second resend
	start := time.Now()
	roundTrip(t, c, "fresh")
	if elapsed := time.Since(start); elapsed >= rto {
		t.Fatalf("fresh bytes took %v, want less than %v: nothing of theirs was lost", elapsed, rto)
	}
}

// sink is a server handler that records everything it receives, for
// tests of what reaches the server, and echoes it.
type sink struct {
	mu  sync.Mutex
	got []byte
}

func (r *sink) handle(c net.Conn) {
	buf := make([]byte, 1024)
	for {
		n, err := c.Read(buf)
		r.mu.Lock()
		r.got = append(r.got, buf[:n]...)
		r.mu.Unlock()
		if err != nil {
			return
		}
		c.Write(buf[:n])
	}
}

func (r *sink) received() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return string(r.got)
}

// waitReceived waits for the server to have received want, failing t if
// it does not within patience.
func (r *sink) waitReceived(t *testing.T, want string) time.Time {
	t.Helper()
	for deadline := time.Now().Add(patience); r.received() != want; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("server received %q, want %q", r.received(), want)
		}
	}
	return time.Now()
}

func TestCutToClientDeliversExactlyTheBytesBeforeItThenEnds(t *testing.T) {
	for _, reset := range []bool{false, true} {
		t.Run(map[bool]string{false: "FIN", true: "RST"}[reset], func(t *testing.T) {
			p := setup(t, echo)
			p.SetCut(Cut{Dir: ToClient, After: 7, Reset: reset})
			c := dial(t, p)
			write(t, c, "0123")
			expect(t, c, "0123")
			write(t, c, "456789")
			expect(t, c, "456")
			want := io.EOF
			if reset {
				want = syscall.ECONNRESET
			}
			expectEnd(t, c, want)
		})
	}
}

func TestCutToServerLetsThePrefixThroughAndClosesBothSides(t *testing.T) {
	var r sink
	p := setup(t, r.handle)
	p.SetCut(Cut{Dir: ToServer, After: 5})
	c := dial(t, p)
	write(t, c, "abcdefgh")
	r.waitReceived(t, "abcde")
	// The sink echoes what it got, and the echo may cross before the
	// proxy closes the client's side: the connection must end, after at
	// most that echo.
	c.SetReadDeadline(time.Now().Add(patience))
	echoed, err := io.ReadAll(c)
	if errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read %q, then %v: want the connection to end", echoed, err)
	}
	if !strings.HasPrefix("abcde", string(echoed)) {
		t.Fatalf("read %q before the end, want at most the echo of %q", echoed, "abcde")
	}
	expectCount(t, "Conns", waitConns(t, p, 0), 0)
}

func TestCutWithLingerDeliversWhatTheProxyHeldLate(t *testing.T) {
	var r sink
	p := setup(t, r.handle)
	const latency, linger = 200 * time.Millisecond, 600 * time.Millisecond
	c := dial(t, p)
	roundTrip(t, c, "a") // the upstream is up
	p.SetLatencyOneWay(ToServer, latency)
	write(t, c, "b")
	for deadline := time.Now().Add(patience); p.Received(ToServer) != 2; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("Received(ToServer) = %d, want 2: \"b\" never reached the proxy", p.Received(ToServer))
		}
	}
	if p.Held() != 1 {
		t.Fatalf("Held() = %d, want 1: \"b\", delayed", p.Held())
	}
	p.CutAll(true, linger)
	cut := time.Now()
	expectEnd(t, c, syscall.ECONNRESET)
	at := r.waitReceived(t, "ab")
	expectAtLeast(t, at.Sub(cut), linger-50*time.Millisecond)
	expectCount(t, "Conns", waitConns(t, p, 0), 0)
}

func TestSliceSpacesSegmentsAndKeepsTheBytes(t *testing.T) {
	p := setup(t, echo)
	p.SetSlice(ToClient, 2, 50*time.Millisecond)
	c := dial(t, p)
	start := time.Now()
	roundTrip(t, c, "0123456789")
	expectAtLeast(t, time.Since(start), 4*50*time.Millisecond)
}

// waitConns waits until the proxy holds n connections and returns how many
// it holds.
func waitConns(t *testing.T, p *Proxy, n int) int {
	t.Helper()
	for deadline := time.Now().Add(patience); p.Conns() != n && time.Now().Before(deadline); {
		time.Sleep(time.Millisecond)
	}
	return p.Conns()
}

// named answers each read with its name and what it read, so that a test
// can tell which server a connection reached.
func named(name string) func(net.Conn) {
	return func(c net.Conn) {
		buf := make([]byte, 64)
		for {
			n, err := c.Read(buf)
			if err != nil {
				return
			}
			if _, err := c.Write([]byte(name + ":" + string(buf[:n]))); err != nil {
				return
			}
		}
	}
}

func TestSetTargetSendsNewConnectionsToTheNewTargetAndLeavesOldOnes(t *testing.T) {
	p := setup(t, named("a"))
	b := startServer(t, named("b"))
	before := dial(t, p)
	write(t, before, "1")
	expect(t, before, "a:1")

	p.SetTarget(b)
	after := dial(t, p)
	write(t, after, "2")
	expect(t, after, "b:2")
	write(t, before, "3")
	expect(t, before, "a:3")
	expectCount(t, "Conns", p.Conns(), 2)
}

func TestSetTargetLeavesConnectionsAcceptedDuringABlackholeOnTheOldTarget(t *testing.T) {
	p := setup(t, named("a"))
	b := startServer(t, named("b"))
	p.Blackhole()
	pending := dial(t, p)
	write(t, pending, "1")
	expectSilence(t, pending)

	p.SetTarget(b)
	p.Heal()
	expect(t, pending, "a:1")
	fresh := dial(t, p)
	write(t, fresh, "2")
	expect(t, fresh, "b:2")
}
