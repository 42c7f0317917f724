package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gomodule/redigo/redis"

	"github.com/redisalive/redisalive/internal/redistest"
)

func TestDoctorFailsOnAServerThatNeitherProbesNorReapsItsClients(t *testing.T) {
	srv := redistest.Start(t, "--tcp-keepalive", "0", "--timeout", "0")
	got := runDoctor(t, nil, "-url", "redis://"+srv.Addr())
	wantExit(t, got, exitFail)
	wantLine(t, got.stdout, levelFail, "server.tcp-keepalive", "0 (off):")
	wantLine(t, got.stdout, levelWarn, "server.timeout", "0 (off);")
	if got.stderr != "" {
		t.Errorf("stderr: got %q, want nothing", got.stderr)
	}
}

func TestDoctorPassesAServerWithKeepaliveAndTimeoutAndShowsItsBlockedClient(t *testing.T) {
	srv := redistest.Start(t, "--tcp-keepalive", "60", "--timeout", "600")
	blockClient(t, srv)
	got := runDoctor(t, map[string]string{"REDIS_URL": "redis://" + srv.Addr()})
	wantExit(t, got, exitOK)
	wantLine(t, got.stdout, levelOK, "server.tcp-keepalive", "60s:")
	wantLine(t, got.stdout, levelOK, "server.timeout", "600s;")
	wantLine(t, got.stdout, levelOK, "server.maxclients", "2 of 10000 connected")
	wantLine(t, got.stdout, levelOK, "clients.blocked", "1 blocked, 0 for 10m0s or more")
	if l := line(t, got.stdout, "clients.blocked"); !strings.Contains(l, "cmd=brpop") {
		t.Errorf("clients.blocked: got %q, want the blocked client's cmd=brpop", l)
	}
	wantLine(t, got.stdout, levelInfo, "kernel.tcp_keepalive_time", "7200s:")
	wantLine(t, got.stdout, levelOK, "pool.warnings", "none:")
	if !strings.HasSuffix(got.stdout, "0 FAIL, 0 WARN, 7 OK, 14 INFO: exit 0\n") {
		t.Errorf("summary: got output ending %q, want 0 FAIL, 0 WARN, 7 OK, 14 INFO: exit 0", got.stdout[strings.LastIndex(strings.TrimSuffix(got.stdout, "\n"), "\n")+1:])
	}
}

// blockClient leaves a client blocked in BRPOP without limit on srv until
// the test ends.
func blockClient(t *testing.T, srv *redistest.Server) {
	t.Helper()
	c, err := redis.Dial("tcp", srv.Addr())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if err := c.Send("BRPOP", "nothing", 0); err != nil {
		t.Fatal(err)
	}
	if err := c.Flush(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		info, err := redis.String(srv.Do(t, "INFO", "clients"), nil)
		if err != nil {
			t.Fatal(err)
		}
		if parseInfo(info)["blocked_clients"] == "1" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("blocked_clients: got %q, want 1 within 5s", parseInfo(info)["blocked_clients"])
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestDoctorWarnsOfWhatNewPoolWarnsAboutWithoutFailing(t *testing.T) {
	srv := redistest.Start(t, "--tcp-keepalive", "60", "--timeout", "600")
	got := runDoctor(t, nil, "-url", "redis://"+srv.Addr()+"?block_slice=2m")
	wantExit(t, got, exitOK)
	wantLine(t, got.stdout, levelWarn, "pool.warnings", "BlockSlice 2m0s: a blocking read on a dead link is noticed only after 2m0.5s")
	wantLine(t, got.stdout, levelInfo, "pool.blocking-read", "2m0.5s:")
}

// A managed service may refuse CONFIG: the doctor then says what it could
// not check, and reads what INFO shows anyway.
func TestDoctorWarnsOfWhatItCannotReadOnAServerWithoutCONFIG(t *testing.T) {
	srv := redistest.Start(t, "--rename-command", "CONFIG", "")
	got := runDoctor(t, nil, "-url", "redis://"+srv.Addr())
	wantExit(t, got, exitOK)
	wantLine(t, got.stdout, levelWarn, "server.tcp-keepalive", "unknown: could not be read (CONFIG GET tcp-keepalive: ERR unknown command")
	wantLine(t, got.stdout, levelWarn, "server.timeout", "unknown: could not be read (CONFIG GET timeout: ERR unknown command")
	wantLine(t, got.stdout, levelOK, "server.maxclients", "1 of 10000 connected")
}

func TestDoctorExitsTwoAtOnceWhenTheServerRefusesConnections(t *testing.T) {
	addr := closedAddr(t)
	got := runDoctor(t, nil, "-url", "redis://"+addr)
	wantExit(t, got, exitUnusable)
	if want := "redisalive-doctor: cannot reach " + addr + " (a PING within dial_timeout 5s): "; !strings.HasPrefix(got.stderr, want) || !strings.Contains(got.stderr, "refused") {
		t.Errorf("stderr: got %q, want it to start %q and say the connection was refused", got.stderr, want)
	}
	if got.stdout != "" {
		t.Errorf("stdout: got %q, want nothing", got.stdout)
	}
}

// TestDoctorExitsTwoAtOnceWhenTheServerRefusesTheURLsPassword: a wrong
// password is the URL's fault, and the doctor says so rather than that
// the server cannot be reached.
func TestDoctorExitsTwoAtOnceWhenTheServerRefusesTheURLsPassword(t *testing.T) {
	srv := redistest.Start(t)
	srv.Do(t, "CONFIG", "SET", "requirepass", "secret")
	got := runDoctor(t, nil, "-url", "redis://:wrong@"+srv.Addr())
	wantExit(t, got, exitUnusable)
	if want := "redisalive-doctor: " + srv.Addr() + " refuses this URL's settings: redisalive: new connection to " + srv.Addr() + " failed at AUTH: WRONGPASS"; !strings.HasPrefix(got.stderr, want) {
		t.Errorf("stderr: got %q, want it to start %q", got.stderr, want)
	}
}

func TestDoctorExitsTwoWithinTheDialTimeoutWhenNothingAnswers(t *testing.T) {
	const dialTimeout = 300 * time.Millisecond
	got := runDoctor(t, nil, "-url", "redis://"+silentAddr(t)+"?dial_timeout="+dialTimeout.String())
	wantExit(t, got, exitUnusable)
	// The margin is for a busy machine; nothing else waits.
	if limit := dialTimeout + time.Second; got.took < dialTimeout || got.took > limit {
		t.Errorf("took %v, want from %v to %v", got.took, dialTimeout, limit)
	}
	if !strings.Contains(got.stderr, "within dial_timeout 300ms") || !strings.Contains(got.stderr, "deadline exceeded") {
		t.Errorf("stderr: got %q, want it to name dial_timeout 300ms and the deadline", got.stderr)
	}
}

func TestDoctorExitsTwoOnBadInputWithoutShowingThePassword(t *testing.T) {
	for _, tc := range []struct {
		name   string
		env    map[string]string
		args   []string
		stderr string
	}{
		{"no URL", nil, nil, "no server: pass -url"},
		{"empty URL and REDIS_URL", map[string]string{"REDIS_URL": ""}, []string{"-url", ""}, "no server: pass -url"},
		{"scheme", nil, []string{"-url", "http://localhost"}, `scheme "http", want redis, rediss, unix, redis+sentinel or rediss+sentinel`},
		{"port with password", nil, []string{"-url", "redis://:secret@localhost:99999"}, `parse URL "redis://:xxxxx@localhost:99999": port 99999`},
		{"password in REDIS_URL", map[string]string{"REDIS_URL": "redis://:secret@localhost?read_timeout=1ns"}, nil, "read_timeout=\"1ns\": must be at least 10ms"},
		{"unknown flag", nil, []string{"-bogus"}, "flag provided but not defined: -bogus"},
		{"argument", nil, []string{"-url", "redis://localhost", "redis://other"}, `unexpected arguments ["redis://other"]`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := runDoctor(t, tc.env, tc.args...)
			wantExit(t, got, exitUnusable)
			if !strings.Contains(got.stderr, tc.stderr) {
				t.Errorf("stderr: got %q, want it to contain %q", got.stderr, tc.stderr)
			}
			if strings.Contains(got.stderr, "secret") {
				t.Errorf("stderr: got %q, which shows the password", got.stderr)
			}
		})
	}
}

func TestDoctorJSONHasTheDocumentedShapeAndTheTextFindings(t *testing.T) {
	srv := redistest.Start(t, "--tcp-keepalive", "0", "--timeout", "10")
	url := "redis://" + srv.Addr()
	text := runDoctor(t, nil, "-url", url)
	got := runDoctor(t, nil, "-json", "-url", url)
	if got.code != text.code || got.code != exitFail {
		t.Fatalf("exit: got %d with -json and %d without, want %d", got.code, text.code, exitFail)
	}
	var r report
	dec := json.NewDecoder(strings.NewReader(got.stdout))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&r); err != nil {
		t.Fatalf("decoding -json output: %v\n%s", err, got.stdout)
	}
	if r.Exit != got.code || r.Error != "" {
		t.Errorf("document: got exit %d, error %q, want exit %d and no error", r.Exit, r.Error, got.code)
	}
	// The text output printed from the decoded findings is the text run's
	// own: the same findings, word for word.
	var fromJSON bytes.Buffer
	writeText(&fromJSON, r)
	if fromJSON.String() != text.stdout {
		t.Errorf("findings differ:\n-json, as text:\n%s\ntext:\n%s", fromJSON.String(), text.stdout)
	}
	// Every field of the documented shape is present in every finding,
	// fix even when empty.
	var raw struct{ Findings []map[string]any }
	if err := json.Unmarshal([]byte(got.stdout), &raw); err != nil {
		t.Fatal(err)
	}
	for _, f := range raw.Findings {
		if len(f) != 5 || f["check"] == nil || f["level"] == nil || f["value"] == nil || f["why"] == nil || f["fix"] == nil {
			t.Errorf("finding: got %v, want exactly check, level, value, why and fix", f)
		}
	}
}

func TestDoctorJSONReportsBadInputAsADocumentToo(t *testing.T) {
	for _, tc := range []struct {
		args  []string
		error string
	}{
		{[]string{"-json", "-url", "redis://" + closedAddr(t)}, "cannot reach"},
		{[]string{"-json", "-bogus"}, "flag provided but not defined: -bogus"},
	} {
		got := runDoctor(t, nil, tc.args...)
		var r report
		if err := json.Unmarshal([]byte(got.stdout), &r); err != nil {
			t.Fatalf("%q: decoding the output: %v\n%s", tc.args, err, got.stdout)
		}
		if got.code != exitUnusable || r.Exit != exitUnusable || r.Findings == nil || len(r.Findings) != 0 || !strings.Contains(r.Error, tc.error) {
			t.Errorf("%q: got exit %d and %+v, want exit 2, no findings and an error containing %q", tc.args, got.code, r, tc.error)
		}
	}
}

// TestDoctorBinaryExitsWithTheStatusOfItsFindings builds the command and
// runs it once, as an operator would: main must hand run's status to the
// shell and read REDIS_URL from the real environment.
func TestDoctorBinaryExitsWithTheStatusOfItsFindings(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the command; skipped with -short")
	}
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("this test builds the command with go, which is not in PATH: %v", err)
	}
	srv := redistest.Start(t, "--tcp-keepalive", "0")
	bin := filepath.Join(t.TempDir(), "redisalive-doctor")
	if out, err := exec.CommandContext(t.Context(), goTool, "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	cmd := exec.CommandContext(t.Context(), bin)
	cmd.Env = append(os.Environ(), "REDIS_URL=redis://"+srv.Addr())
	out, err := cmd.Output()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != exitFail {
		t.Fatalf("running %s: got %v, want exit status %d; output:\n%s", bin, err, exitFail, out)
	}
	wantLine(t, string(out), levelFail, "server.tcp-keepalive", "0 (off):")
}
