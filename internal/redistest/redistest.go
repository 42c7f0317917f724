// Package redistest provides test helpers that start real redis-server
// processes on free loopback ports: a plain server, a TLS-only server, a
// Redis Cluster and a Redis Sentinel deployment.
package redistest

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gomodule/redigo/redis"
)

const (
	readyTimeout = 10 * time.Second
	stopTimeout  = 10 * time.Second
	adminTimeout = 2 * time.Second
	pollInterval = 20 * time.Millisecond
	startTries   = 5
	rebindWithin = 5 * time.Second
	logTailLines = 20
)

// errAddrInUse marks a start that failed only because the port was taken,
// which is worth retrying rather than failing the test.
var errAddrInUse = errors.New("address already in use")

// Server is a redis-server process owned by one test. Its methods are not
// safe to call concurrently with Stop or Restart.
type Server struct {
	bin    string
	port   int
	dir    string
	args   []string
	tls    *serverTLS // nil for a plain server
	cmd    *exec.Cmd
	exited chan struct{}

	// socket is the path of the unix socket it also listens on, "" for
	// none.
	socket string

	// conf is a config file read before args, "" for none. The server may
	// rewrite it (sentinels do, and so does CONFIG REWRITE), so Restart
	// brings the server back as it last configured itself.
	conf string
}

// Start starts redis-server on a free 127.0.0.1 port with a private temp
// dir, waits until it answers PING (bounded: 10 s), and registers
// tb.Cleanup to kill it by its PID and remove its files. Extra args are
// appended to the redis-server command line, e.g. "--timeout", "1".
//
// If redis-server is not in PATH the test is skipped, unless
// REDISALIVE_REQUIRE_SERVER=1, in which case it fails: CI sets that so a
// missing server cannot silently turn the suite green.
func Start(tb testing.TB, args ...string) *Server {
	tb.Helper()
	s := newServer(tb, args)
	s.start(tb, freePort)
	return s
}

// lookPath finds a binary the tests need, skipping or failing tb as Start
// documents when it is missing; pkg is the Debian package that has it.
func lookPath(tb testing.TB, name, pkg string) string {
	tb.Helper()
	bin, err := exec.LookPath(name)
	if err != nil {
		msg := fmt.Sprintf("redistest: %s not found in PATH; install it (apt-get install %s) to run this test", name, pkg)
		if os.Getenv("REDISALIVE_REQUIRE_SERVER") == "1" {
			tb.Fatal(msg)
		}
		tb.Skip(msg)
	}
	return bin
}

// newServer returns a Server that is not running yet, with its cleanup
// already registered so that a failed start leaves nothing behind.
func newServer(tb testing.TB, args []string) *Server {
	tb.Helper()
	s := &Server{bin: lookPath(tb, "redis-server", "redis-server"), dir: tb.TempDir(), args: args}
	// Registered after TempDir so it runs first: the process must be gone
	// before its directory is removed.
	tb.Cleanup(func() { s.Stop(tb) })
	return s
}

// start launches s on a port from pick, picking again when another process
// wins the race for the port.
func (s *Server) start(tb testing.TB, pick func() (int, error)) {
	tb.Helper()
	for try := 1; ; try++ {
		port, err := pick()
		if err != nil {
			tb.Fatalf("redistest: %v", err)
		}
		err = s.launch(port)
		if err == nil {
			return
		}
		if !errors.Is(err, errAddrInUse) || try == startTries {
			tb.Fatalf("redistest: %v", err)
		}
	}
}

// freePort asks the kernel for an unused port. Another process may grab it
// before redis-server binds it, which launch reports as errAddrInUse.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("finding a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func (s *Server) logPath() string { return filepath.Join(s.dir, "redis.log") }

// launch starts the process on port and waits until it answers.
func (s *Server) launch(port int) error {
	logf, err := os.OpenFile(s.logPath(), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer logf.Close()
	// Only this launch's part of the log tells why this launch failed.
	logStart, err := logf.Seek(0, io.SeekEnd)
	if err != nil {
		return err
	}
	var args []string
	if s.conf != "" {
		// redis-server reads a config file only as its first argument.
		args = append(args, s.conf)
	}
	args = append(args, s.listenArgs(port)...)
	if s.socket != "" {
		args = append(args, "--unixsocket", s.socket)
	}
	args = append(args,
		"--bind", "127.0.0.1",
		"--save", "",
		"--appendonly", "no",
		"--dir", s.dir,
		"--logfile", s.logPath(),
		"--protected-mode", "no",
		"--enable-debug-command", "yes")
	args = append(args, s.args...)
	cmd := exec.Command(s.bin, args...)
	// Config errors go to stdout/stderr before the logfile is opened.
	cmd.Stdout, cmd.Stderr = logf, logf
	// The server dies with the test binary even if Cleanup never runs;
	// its own process group keeps terminal signals meant
	// for go test away from it.
	cmd.SysProcAttr = dieWithParent()
	if err := cmd.Start(); err != nil {
		return err
	}
	exited := make(chan struct{})
	go func() {
		_ = cmd.Wait() // SIGKILL is the normal way out, so the status says nothing.
		close(exited)
	}()
	s.cmd, s.exited, s.port = cmd, exited, port

	deadline := time.Now().Add(readyTimeout)
	for !s.ready() {
		select {
		case <-exited:
			out := s.logSince(logStart)
			err := fmt.Errorf("redis-server on port %d exited during startup\n--- redis.log tail ---\n%s", port, tail(out))
			if strings.Contains(out, "Address already in use") {
				err = fmt.Errorf("%w: %w", errAddrInUse, err)
			}
			return err
		case <-time.After(pollInterval):
		}
		if time.Now().After(deadline) {
			_ = cmd.Process.Kill()
			<-exited
			return fmt.Errorf("redis-server on port %d not ready within %v\n--- redis.log tail ---\n%s",
				port, readyTimeout, tail(s.logSince(logStart)))
		}
	}
	return nil
}

// ready reports whether our own process answers on the port; checking the
// PID keeps us from mistaking a server that stole the port for ours.
func (s *Server) ready() bool {
	info, err := redis.String(s.TryDo("INFO", "server"))
	return err == nil && infoField(info, "process_id") == strconv.Itoa(s.PID())
}

func (s *Server) logSince(off int64) string {
	b, err := os.ReadFile(s.logPath())
	if err != nil || off > int64(len(b)) {
		return fmt.Sprintf("(cannot read %s: %v)", s.logPath(), err)
	}
	return string(b[off:])
}

func tail(s string) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > logTailLines {
		lines = lines[len(lines)-logTailLines:]
	}
	return strings.Join(lines, "\n")
}

// Addr returns the server address as "127.0.0.1:PORT".
func (s *Server) Addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(s.port)) }

// UnixSocket returns the path of the unix socket the server also listens
// on, "" if none: a way in that network faults do not touch. The nodes of
// a cluster with replicas have one.
func (s *Server) UnixSocket() string { return s.socket }

// Port returns the TCP port the server listens on (the TLS port of a TLS
// server); it survives Restart.
func (s *Server) Port() int { return s.port }

// PID returns the process id of the current server process.
func (s *Server) PID() int { return s.cmd.Process.Pid }

func (s *Server) dial() (redis.Conn, error) {
	return redis.Dial("tcp", s.Addr(),
		redis.DialConnectTimeout(adminTimeout),
		redis.DialReadTimeout(adminTimeout),
		redis.DialWriteTimeout(adminTimeout),
		redis.DialUseTLS(s.tls != nil),
		redis.DialTLSConfig(s.TLSConfig()),
		redis.DialTLSHandshakeTimeout(adminTimeout))
}

// Do runs a one-off admin command on a fresh connection and fails tb on
// error.
func (s *Server) Do(tb testing.TB, cmd string, args ...any) any {
	tb.Helper()
	reply, err := s.TryDo(cmd, args...)
	if err != nil {
		tb.Fatalf("redistest: %s: %v", cmd, err)
	}
	return reply
}

// TryDo is Do returning the error instead, for use while the server may be
// down.
func (s *Server) TryDo(cmd string, args ...any) (any, error) {
	c, err := s.dial()
	if err != nil {
		return nil, err
	}
	defer c.Close()
	return c.Do(cmd, args...)
}

// ConnectedClients returns INFO's connected_clients, not counting the admin
// connection used to ask.
func (s *Server) ConnectedClients(tb testing.TB) int {
	tb.Helper()
	info, err := redis.String(s.Do(tb, "INFO", "clients"), nil)
	if err != nil {
		tb.Fatalf("redistest: INFO clients: %v", err)
	}
	n, err := strconv.Atoi(infoField(info, "connected_clients"))
	if err != nil {
		tb.Fatalf("redistest: INFO clients: connected_clients: %v", err)
	}
	return n - 1
}

// WaitConnectedClients polls until ConnectedClients == want, failing tb if
// that does not happen within the given time.
func (s *Server) WaitConnectedClients(tb testing.TB, want int, within time.Duration) {
	tb.Helper()
	deadline := time.Now().Add(within)
	for {
		got := s.ConnectedClients(tb)
		if got == want {
			return
		}
		if time.Now().After(deadline) {
			tb.Fatalf("connected_clients: got %d, want %d after %v", got, want, within)
		}
		time.Sleep(pollInterval)
	}
}

// ClientIDs returns the ids in CLIENT LIST, except the admin connection's.
func (s *Server) ClientIDs(tb testing.TB) []int64 {
	tb.Helper()
	c, err := s.dial()
	if err != nil {
		tb.Fatalf("redistest: %v", err)
	}
	defer c.Close()
	self, err := redis.Int64(c.Do("CLIENT", "ID"))
	if err != nil {
		tb.Fatalf("redistest: CLIENT ID: %v", err)
	}
	list, err := redis.String(c.Do("CLIENT", "LIST"))
	if err != nil {
		tb.Fatalf("redistest: CLIENT LIST: %v", err)
	}
	var ids []int64
	for line := range strings.Lines(list) {
		field, _, _ := strings.Cut(line, " ")
		id, err := strconv.ParseInt(strings.TrimPrefix(field, "id="), 10, 64)
		if err != nil {
			tb.Fatalf("redistest: CLIENT LIST line %q: %v", line, err)
		}
		if id != self {
			ids = append(ids, id)
		}
	}
	return ids
}

// Stop kills the server with SIGKILL, so clients see an abrupt death rather
// than a graceful shutdown, and waits for the process to be reaped. Stopping
// a stopped server is a no-op.
func (s *Server) Stop(tb testing.TB) {
	tb.Helper()
	if s.cmd == nil {
		return
	}
	// os.Process signals through a pidfd, so a reaped, reused PID is never hit.
	if err := s.cmd.Process.Kill(); err != nil && !errors.Is(err, os.ErrProcessDone) {
		tb.Fatalf("redistest: killing redis-server (pid %d): %v", s.PID(), err)
	}
	select {
	case <-s.exited:
	case <-time.After(stopTimeout):
		tb.Fatalf("redistest: redis-server (pid %d) still running %v after SIGKILL", s.PID(), stopTimeout)
	}
}

// running reports whether the server's process was started and has not
// exited.
func (s *Server) running() bool {
	if s.exited == nil {
		return false
	}
	select {
	case <-s.exited:
		return false
	default:
		return true
	}
}

// Restart stops the server and starts it again on the same port with the
// same arguments. The new server starts empty: persistence is disabled.
func (s *Server) Restart(tb testing.TB) {
	tb.Helper()
	s.Stop(tb)
	// Connections of the old process may briefly hold the port.
	deadline := time.Now().Add(rebindWithin)
	for {
		err := s.launch(s.port)
		if err == nil {
			return
		}
		if !errors.Is(err, errAddrInUse) || time.Now().After(deadline) {
			tb.Fatalf("redistest: restart: %v", err)
		}
		time.Sleep(pollInterval)
	}
}

// infoField returns the value of key in an INFO reply, or "" if absent.
func infoField(info, key string) string {
	for line := range strings.Lines(info) {
		if v, ok := strings.CutPrefix(line, key+":"); ok {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

// tcpStateNames maps the st column of /proc/net/tcp to the kernel's names.
var tcpStateNames = map[string]string{
	"01": "ESTABLISHED",
	"02": "SYN_SENT",
	"03": "SYN_RECV",
	"04": "FIN_WAIT1",
	"05": "FIN_WAIT2",
	"06": "TIME_WAIT",
	"07": "CLOSE",
	"08": "CLOSE_WAIT",
	"09": "LAST_ACK",
	"0A": "LISTEN",
	"0B": "CLOSING",
	"0C": "NEW_SYN_RECV",
}

// TCPStates counts TCP sockets (IPv4 and IPv6, from /proc/net/tcp and
// /proc/net/tcp6 of the current network namespace) whose remote port is
// port, i.e. client-side sockets connected to the server, grouped by state
// name ("ESTABLISHED", "CLOSE_WAIT", ...).
func TCPStates(port int) (map[string]int, error) {
	states := make(map[string]int)
	want := fmt.Sprintf(":%04X", port)
	for _, path := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		b, err := os.ReadFile(path)
		if errors.Is(err, os.ErrNotExist) {
			continue // IPv6 disabled
		}
		if err != nil {
			return nil, err
		}
		lines := strings.Split(string(b), "\n")
		for _, line := range lines[1:] { // skip the header
			f := strings.Fields(line)
			if len(f) < 4 || !strings.HasSuffix(f[2], want) {
				continue
			}
			name, ok := tcpStateNames[f[3]]
			if !ok {
				name = "UNKNOWN_" + f[3]
			}
			states[name]++
		}
	}
	return states, nil
}
