//go:build linux

// Package faultnet injects real kernel network faults (dropped packets,
// resets, destroyed sockets) for tests, confined to a private network
// namespace so that nothing on the host network is touched.
//
// A test calls Enter first; the test binary then re-runs that test under
// `unshare -n`, where loopback is brought up and faults are injected with
// iptables and `ss -K`. The namespace and its rules vanish with the child.
package faultnet

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"net"
	"os"
	"os/exec"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

const (
	childEnv   = "REDISALIVE_FAULTNET_CHILD"
	requireEnv = "REDISALIVE_REQUIRE_FAULTNET"
	cmdTimeout = 5 * time.Second
)

// Enter is called at the top of a test. Outside the namespace it re-runs
// the test in a child test binary under `unshare -n`, streams the child's
// output, fails t if the child fails, and returns false: the caller should
// return. Inside the namespace it brings up loopback, checks that iptables
// works there and returns true.
//
// It needs Linux, root, and unshare, ip, iptables, ss and redis-server in
// PATH. If any is missing the test is skipped, or fails when
// REDISALIVE_REQUIRE_FAULTNET=1 so that CI cannot silently skip fault tests.
func Enter(t *testing.T) bool {
	t.Helper()
	if os.Getenv(childEnv) == "1" {
		enterChild(t)
		return true
	}
	if missing := missingPrereqs(); len(missing) > 0 {
		msg := fmt.Sprintf("faultnet: needs %s; run as root with unshare, ip, iptables, ss and redis-server in PATH: sudo go test -run %s ./...",
			strings.Join(missing, ", "), t.Name())
		if os.Getenv(requireEnv) == "1" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	timeout := 10 * time.Minute
	if d, ok := t.Deadline(); ok {
		timeout = time.Until(d)
	}
	cmd := exec.Command("unshare", "-n", "--", os.Args[0],
		"-test.run="+childRunPattern(t.Name(), runFlag()),
		"-test.v",
		"-test.count=1",
		"-test.timeout="+timeout.String())
	cmd.Env = append(os.Environ(), childEnv+"=1")
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	// unshare execs the test binary in place, so the child (and through its
	// own Pdeathsig, its redis-server) dies if this process does.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Run(); err != nil {
		t.Errorf("faultnet: %s in a private network namespace: %v", t.Name(), err)
	}
	return false
}

// runFlag is this binary's -test.run pattern.
func runFlag() string {
	if f := flag.Lookup("test.run"); f != nil {
		return f.Value.String()
	}
	return ""
}

// childRunPattern selects test name in the child, keeping any subtest
// levels of the parent's -run pattern, so that `-run TestFaults/Keep`
// runs only the matching subtests in the namespace. go test reads a
// top-level | as separating whole patterns, each with its own levels
// (`-run 'TestFaults/Keep|TestOther'`): only those whose first level
// matches name are kept, so the child runs nothing but name.
func childRunPattern(name, parent string) string {
	self := "^" + regexp.QuoteMeta(name) + "$"
	var kept []string
	for _, alt := range splitTop(parent, '|') {
		levels := splitTop(alt, '/')
		if re, err := regexp.Compile(levels[0]); err == nil && !re.MatchString(name) {
			continue
		}
		if len(levels) == 1 {
			return self // every subtest
		}
		kept = append(kept, self+"/"+strings.Join(levels[1:], "/"))
	}
	if len(kept) == 0 {
		return self
	}
	return strings.Join(kept, "|")
}

// splitTop splits s at each sep outside brackets and parentheses.
func splitTop(s string, sep rune) []string {
	var parts []string
	depth, from := 0, 0
	for i, r := range s {
		switch r {
		case '[', '(':
			depth++
		case ']', ')':
			depth--
		case sep:
			if depth == 0 {
				parts = append(parts, s[from:i])
				from = i + 1
			}
		}
	}
	return append(parts, s[from:])
}

func missingPrereqs() []string {
	var missing []string
	if runtime.GOOS != "linux" {
		missing = append(missing, "Linux")
	}
	if os.Geteuid() != 0 {
		missing = append(missing, "root")
	}
	for _, bin := range []string{"unshare", "ip", "iptables", "ss", "redis-server"} {
		if _, err := exec.LookPath(bin); err != nil {
			missing = append(missing, bin)
		}
	}
	return missing
}

func enterChild(t *testing.T) {
	t.Helper()
	// A stray REDISALIVE_FAULTNET_CHILD in the environment must not lead
	// to firewall rules on the host. A fresh namespace has no interface up
	// but loopback; /proc/1/ns/net cannot be used to compare, as sandboxes
	// often hide it.
	ifaces, err := net.Interfaces()
	if err != nil {
		t.Fatalf("faultnet: %v", err)
	}
	for _, ifc := range ifaces {
		if ifc.Flags&net.FlagUp != 0 && ifc.Flags&net.FlagLoopback == 0 {
			t.Fatalf("faultnet: %s is set but interface %s is up, so this is not a private network namespace; refusing to inject faults", childEnv, ifc.Name)
		}
	}
	if _, err := run("ip", "link", "set", "lo", "up"); err != nil {
		t.Fatalf("faultnet: %v", err)
	}
	if _, err := iptablesBin(); err != nil {
		t.Fatalf("faultnet: %v", err)
	}
}

// iptablesBin picks the iptables that works in this namespace: the default
// (nft on Debian 12) may lack kernel support where the legacy one works.
var iptablesBin = sync.OnceValues(func() (string, error) {
	probe := []string{"INPUT", "-p", "tcp", "--dport", "9", "-j", "DROP"}
	var errs []string
	for _, bin := range []string{"iptables", "iptables-legacy"} {
		err := iptables(bin, "-I", probe)
		if err == nil {
			err = iptables(bin, "-D", probe)
		}
		if err == nil {
			return bin, nil
		}
		errs = append(errs, err.Error())
	}
	return "", fmt.Errorf("no working iptables in this network namespace: %s", strings.Join(errs, "; "))
})

// iptables inserts (-I) or deletes (-D) rule. It waits for the xtables
// lock, which iptables-legacy shares across namespaces.
func iptables(bin, op string, rule []string) error {
	_, err := run(bin, append([]string{"-w", "5", op}, rule...)...)
	return err
}

// run runs a command with a timeout and returns its stdout; the error
// carries the command's output.
func run(name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), cmdTimeout)
	defer cancel()
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		out := bytes.TrimSpace(append(stdout.Bytes(), stderr.Bytes()...))
		return "", fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, out)
	}
	return stdout.String(), nil
}

// Direction selects which packets a Blackhole drops.
type Direction int

const (
	// ToServer drops client-to-server packets.
	ToServer Direction = iota
	// FromServer drops server-to-client packets.
	FromServer
	// Both drops packets in both directions.
	Both
)

// Blackhole silently drops TCP packets to and/or from the local port in
// the given direction until the returned heal func (idempotent, also run at
// cleanup) removes exactly those rules.
func Blackhole(t testing.TB, port int, dir Direction) (heal func()) {
	t.Helper()
	return blackhole(t, "", port, dir)
}

// BlackholeFrom is Blackhole for the connections whose client side has
// the local address src alone, e.g. "127.0.0.9": connections to the same
// port from other addresses (127.0.0.1) keep working. With a server that
// dials out from a source address of its own (bind-source-addr), it cuts
// that server off while clients still get through.
func BlackholeFrom(t testing.TB, src string, port int, dir Direction) (heal func()) {
	t.Helper()
	if net.ParseIP(src) == nil {
		t.Fatalf("faultnet: source address %q is not an IP address", src)
	}
	return blackhole(t, src, port, dir)
}

// BlackholeAddr silently drops every TCP packet from or to the local
// address addr, e.g. "127.0.0.9", whatever its ports, until the returned
// heal func (idempotent, also run at cleanup) removes exactly those rules.
// With a server that dials out from an address of its own
// (bind-source-addr), it cuts the connections that server opened, which
// Blackhole of its port leaves up: a cluster node's links to the other
// nodes' cluster bus, say.
func BlackholeAddr(t testing.TB, addr string) (heal func()) {
	t.Helper()
	if net.ParseIP(addr) == nil {
		t.Fatalf("faultnet: address %q is not an IP address", addr)
	}
	return insertRules(t,
		[]string{"INPUT", "-p", "tcp", "-s", addr, "-j", "DROP"},
		[]string{"INPUT", "-p", "tcp", "-d", addr, "-j", "DROP"})
}

// blackhole is Blackhole for the clients at address src, or for all if src
// is "".
func blackhole(t testing.TB, src string, port int, dir Direction) (heal func()) {
	t.Helper()
	p := strconv.Itoa(port)
	// Every loopback packet passes INPUT once: client-to-server packets
	// carry --dport port, server-to-client ones --sport port.
	toServer := []string{"INPUT", "-p", "tcp", "--dport", p}
	fromServer := []string{"INPUT", "-p", "tcp", "--sport", p}
	if src != "" {
		toServer = append(toServer, "-s", src)
		fromServer = append(fromServer, "-d", src)
	}
	toServer = append(toServer, "-j", "DROP")
	fromServer = append(fromServer, "-j", "DROP")
	switch dir {
	case ToServer:
		return insertRules(t, toServer)
	case FromServer:
		return insertRules(t, fromServer)
	case Both:
		return insertRules(t, toServer, fromServer)
	}
	t.Fatalf("faultnet: unknown Direction %d", dir)
	return nil
}

// Reset makes the server side answer client packets to the local port with
// a TCP RST, so new dials are refused and established connections reset,
// until the returned heal func (idempotent, also run at cleanup) is called.
func Reset(t testing.TB, port int) (heal func()) {
	t.Helper()
	return insertRules(t, []string{"INPUT", "-p", "tcp", "--dport", strconv.Itoa(port), "-j", "REJECT", "--reject-with", "tcp-reset"})
}

func insertRules(t testing.TB, rules ...[]string) (heal func()) {
	t.Helper()
	bin := requireNamespace(t)
	var inserted [][]string
	heal = sync.OnceFunc(func() {
		for _, r := range inserted {
			if err := iptables(bin, "-D", r); err != nil {
				t.Errorf("faultnet: heal: %v", err)
			}
		}
	})
	t.Cleanup(heal)
	for _, r := range rules {
		if err := iptables(bin, "-I", r); err != nil {
			t.Fatalf("faultnet: %v", err)
		}
		inserted = append(inserted, r)
	}
	return heal
}

// requireNamespace returns the iptables binary to use, failing t unless
// Enter has put this process in a private network namespace.
func requireNamespace(t testing.TB) string {
	t.Helper()
	if os.Getenv(childEnv) != "1" {
		t.Fatal("faultnet: faults can only be injected in a test that called Enter and got true")
	}
	bin, err := iptablesBin()
	if err != nil {
		t.Fatalf("faultnet: %v", err)
	}
	return bin
}

// KillSockets destroys with `ss -K` the server side of every established
// connection on the local port and returns how many it destroyed. Under a
// Blackhole the resulting RST never reaches the client, whose socket stays
// ESTABLISHED: a half-open connection.
func KillSockets(t testing.TB, port int) int {
	t.Helper()
	requireNamespace(t)
	out, err := run("ss", "-K", "-H", "-t", "-n", "state", "established", fmt.Sprintf("( sport = :%d )", port))
	if err != nil {
		t.Fatalf("faultnet: %v", err)
	}
	// ss prints one line per socket it destroyed.
	killed := 0
	for line := range strings.Lines(out) {
		if strings.TrimSpace(line) != "" {
			killed++
		}
	}
	return killed
}
