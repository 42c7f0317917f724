package main

import (
	"bytes"
	"context"
	"net"
	"strings"
	"testing"
	"testing/fstest"
	"time"

	"go.uber.org/goleak"
)

// TestMain fails the run if any test leaves a goroutine behind: every pool
// the doctor made must have been closed.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// runTimeout bounds each run of the doctor in a test; a run against a
// healthy local server takes milliseconds.
const runTimeout = 20 * time.Second

// fakeProc is a machine with Linux's default TCP settings, so that no test
// depends on the kernel of the machine it runs on.
func fakeProc() fstest.MapFS {
	return fstest.MapFS{
		"proc/sys/net/ipv4/tcp_keepalive_time":   {Data: []byte("7200\n")},
		"proc/sys/net/ipv4/tcp_keepalive_intvl":  {Data: []byte("75\n")},
		"proc/sys/net/ipv4/tcp_keepalive_probes": {Data: []byte("9\n")},
		"proc/sys/net/ipv4/tcp_retries2":         {Data: []byte("15\n")},
	}
}

// result is what one run of the doctor did.
type result struct {
	code           int
	stdout, stderr string
	took           time.Duration
}

// runDoctor runs the command in-process with args, the environment env
// (nil: empty) and fakeProc as the machine.
func runDoctor(t *testing.T, env map[string]string, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), runTimeout)
	defer cancel()
	var stdout, stderr bytes.Buffer
	start := time.Now()
	code := run(ctx, args, system{
		getenv: func(k string) string { return env[k] },
		root:   fakeProc(),
		stdout: &stdout, stderr: &stderr,
	})
	return result{code: code, stdout: stdout.String(), stderr: stderr.String(), took: time.Since(start)}
}

// wantExit stops the test unless the run ended with code, showing its
// output.
func wantExit(t *testing.T, got result, code int) {
	t.Helper()
	if got.code != code {
		t.Fatalf("exit: got %d, want %d; stdout:\n%s\nstderr:\n%s", got.code, code, got.stdout, got.stderr)
	}
}

// line returns the line of text output that reports check, failing t if
// there is none or more than one.
func line(t *testing.T, out, check string) string {
	t.Helper()
	var found []string
	for l := range strings.Lines(out) {
		if f := strings.Fields(l); len(f) > 1 && f[1] == check {
			found = append(found, strings.TrimSuffix(l, "\n"))
		}
	}
	if len(found) != 1 {
		t.Fatalf("lines for %s: got %d, want 1; output:\n%s", check, len(found), out)
	}
	return found[0]
}

// wantLine checks that the text output reports check at level with a value
// that starts with value.
func wantLine(t *testing.T, out string, lvl level, check, value string) {
	t.Helper()
	l := line(t, out, check)
	if want := string(lvl) + " "; !strings.HasPrefix(l, want) {
		t.Errorf("%s: got %q, want level %s", check, l, lvl)
	}
	if _, rest, _ := strings.Cut(l, " "+check+" "); !strings.HasPrefix(strings.TrimSpace(rest), value) {
		t.Errorf("%s: got %q, want value %q", check, l, value)
	}
}

// closedAddr returns a loopback address nothing listens on: dials to it are
// refused at once.
func closedAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

// silentAddr returns the address of a listener that never accepts: the
// kernel completes each connection, and nothing ever answers on it.
func silentAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l.Addr().String()
}
