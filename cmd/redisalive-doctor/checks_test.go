package main

import (
	"errors"
	"strings"
	"testing"
	"testing/fstest"
	"time"

	"github.com/redisalive/redisalive"
)

// defaults are the effective options of a pool made from a bare URL.
var defaults = redisalive.Options{
	HealthCheckInterval: redisalive.DefaultHealthCheckInterval,
	IdleTimeout:         redisalive.DefaultIdleTimeout,
	BlockSlice:          redisalive.DefaultBlockSlice,
}

var errDenied = errors.New("NOPERM this user has no permissions to run the 'config|get' command")

// wantFinding checks a finding's level and the start of its value.
func wantFinding(t *testing.T, got finding, lvl level, value string) {
	t.Helper()
	if got.Level != lvl || !strings.HasPrefix(got.Value, value) {
		t.Errorf("%s: got %s %q, want %s %q...", got.Check, got.Level, got.Value, lvl, value)
	}
	if (got.Level == levelWarn || got.Level == levelFail) && got.Fix == "" {
		t.Errorf("%s: got %s with no fix, want one", got.Check, got.Level)
	}
}

func TestKeepaliveFailsWhenOffWarnsAboveRedisDefaultAndPassesBetween(t *testing.T) {
	for _, tc := range []struct {
		s     setting
		level level
		value string
		why   string
	}{
		{setting{n: 0}, levelFail, "0 (off)", "never probes"},
		{setting{n: 1}, levelOK, "1s", "within about 4s"},
		{setting{n: 60}, levelOK, "60s", "within about 2m0s"},
		{setting{n: 300}, levelOK, "300s", "within about 10m0s"},
		{setting{n: 301}, levelWarn, "301s", "only after about 10m1s"},
		{setting{err: errDenied}, levelWarn, "unknown", "NOPERM"},
	} {
		got := checkKeepalive(tc.s)
		wantFinding(t, got, tc.level, tc.value)
		if !strings.Contains(got.Why, tc.why) {
			t.Errorf("tcp-keepalive %s: got why %q, want it to contain %q", tc.value, got.Why, tc.why)
		}
	}
}

func TestTimeoutWarnsWhenOffOrWhenTheServerClosesIdlePoolConnectionsFirst(t *testing.T) {
	shortIdle := defaults
	shortIdle.IdleTimeout = 10 * time.Second
	for _, tc := range []struct {
		s     setting
		o     redisalive.Options
		level level
		why   string
	}{
		{setting{n: 0}, defaults, levelWarn, "never closes idle connections"},
		{setting{n: 10}, defaults, levelWarn, "harmless churn"},
		// The pool's PING comes at 15 s; Redis closes only after more
		// than 15 s of silence, so whichever comes first is a race.
		{setting{n: 15}, defaults, levelWarn, "before the pool PINGs or closes it (after 15s)"},
		{setting{n: 16}, defaults, levelOK, "never loses one"},
		{setting{n: 600}, defaults, levelOK, "never loses one"},
		{setting{n: 10}, shortIdle, levelWarn, "harmless churn"},
		{setting{n: 11}, shortIdle, levelOK, "after 10s, so it never loses one"},
		{setting{err: errDenied}, defaults, levelWarn, "NOPERM"},
	} {
		got := checkTimeout(tc.s, tc.o)
		if got.Level != tc.level || !strings.Contains(got.Why, tc.why) {
			t.Errorf("timeout %d, idle_timeout %v: got %s %q, want %s and a why containing %q",
				tc.s.n, tc.o.IdleTimeout, got.Level, got.Why, tc.level, tc.why)
		}
	}
	got := checkTimeout(setting{n: 10}, defaults)
	if want := "10s; pool: health_check_interval 15s, idle_timeout 5m0s"; got.Value != want {
		t.Errorf("value: got %q, want %q", got.Value, want)
	}
}

func TestMaxclientsWarnsPastHalfAndFailsAtNinetyPercent(t *testing.T) {
	for _, tc := range []struct {
		connected string
		infoErr   error
		limit     setting
		level     level
		value     string
	}{
		{"1", nil, setting{n: 10000}, levelOK, "1 of 10000 connected (0.0%"},
		{"49", nil, setting{n: 100}, levelOK, "49 of 100"},
		{"50", nil, setting{n: 100}, levelWarn, "50 of 100 connected (50.0%"},
		{"89", nil, setting{n: 100}, levelWarn, "89 of 100"},
		{"90", nil, setting{n: 100}, levelFail, "90 of 100 connected (90.0%"},
		{"120", nil, setting{n: 100}, levelFail, "120 of 100"},
		{"", errDenied, setting{n: 100}, levelWarn, "unknown"},
		{"1", nil, setting{err: errDenied}, levelWarn, "unknown"},
		{"x", nil, setting{n: 100}, levelWarn, "unknown"},
		{"1", nil, setting{n: 0}, levelWarn, "unknown"},
	} {
		wantFinding(t, checkMaxclients(tc.connected, tc.infoErr, tc.limit), tc.level, tc.value)
	}
}

// clientList is a CLIENT LIST reply with, besides the doctor's own
// connection, a client of each kind the client checks tell apart.
const clientList = `id=3 addr=10.0.0.1:5001 laddr=10.0.0.9:6379 fd=8 name= age=7300 idle=3600 flags=N db=0 sub=0 psub=0 multi=-1 cmd=get user=default
id=4 addr=10.0.0.2:5002 laddr=10.0.0.9:6379 fd=9 name=worker age=9000 idle=7200 flags=N db=0 sub=0 psub=0 multi=-1 cmd=set user=default
id=5 addr=10.0.0.3:5003 laddr=10.0.0.9:6379 fd=10 name= age=9000 idle=8000 flags=P db=0 sub=1 psub=0 multi=-1 cmd=subscribe user=default
id=6 addr=10.0.0.4:5004 laddr=10.0.0.9:6379 fd=11 name= age=9000 idle=8000 flags=S db=0 sub=0 psub=0 multi=-1 cmd=replconf user=default
id=7 addr=10.0.0.5:5005 laddr=10.0.0.9:6379 fd=12 name=zombie age=10800 idle=7200 flags=b db=0 sub=0 psub=0 multi=-1 cmd=brpop user=default
id=8 addr=10.0.0.6:5006 laddr=10.0.0.9:6379 fd=13 name= age=60 idle=599 flags=b db=0 sub=0 psub=0 multi=-1 cmd=blmove user=default
id=9 addr=10.0.0.7:5007 laddr=10.0.0.9:6379 fd=14 name= age=0 idle=0 flags=N db=0 sub=0 psub=0 multi=-1 cmd=client|list user=default
`

func TestIdleClientsWarnFromAnHourLeavingOutBlockedSubscribedAndReplicationLinks(t *testing.T) {
	clients := parseClientList(clientList)
	got := checkIdle(clients, nil)
	wantFinding(t, got, levelWarn, "2 of 7 idle for 1h0m0s or more, longest 2h0m0s: id=4 addr=10.0.0.2:5002 name=worker cmd=set age=2h30m0s")

	var fresh []client
	for _, c := range clients {
		c.idle = min(c.idle, longIdle-time.Second)
		fresh = append(fresh, c)
	}
	wantFinding(t, checkIdle(fresh, nil), levelOK, "0 of 7 idle")
	wantFinding(t, checkIdle(nil, errDenied), levelWarn, "unknown")
}

func TestBlockedClientsWarnFromTenMinutesNamingTheLongest(t *testing.T) {
	clients := parseClientList(clientList)
	got := checkBlocked(clients, nil)
	wantFinding(t, got, levelWarn, "2 blocked, 1 for 10m0s or more, longest 2h0m0s: id=7 addr=10.0.0.5:5005 name=zombie cmd=brpop age=3h0m0s")

	var recent []client
	for _, c := range clients {
		if c.id != "7" {
			recent = append(recent, c)
		}
	}
	wantFinding(t, checkBlocked(recent, nil), levelOK, "1 blocked, 0 for 10m0s or more, longest 9m59s: id=8")
	wantFinding(t, checkBlocked(nil, nil), levelOK, "0 blocked")
	wantFinding(t, checkBlocked(nil, errDenied), levelWarn, "unknown")
}

func TestParseClientListRejectsAReplyThatIsNotOne(t *testing.T) {
	if got := parseClientList("ERR something\n"); got != nil {
		t.Errorf("got %v, want nil", got)
	}
	if got := parseClientList(""); got == nil || len(got) != 0 {
		t.Errorf("empty reply: got %#v, want no clients", got)
	}
}

func TestVersionWarnsBelowRedis62AndFailsASubSecondBlockSliceBelow6(t *testing.T) {
	for _, tc := range []struct {
		version    string
		blockSlice time.Duration
		level      level
	}{
		{"7.0.15", time.Second, levelOK},
		{"6.2.0", 100 * time.Millisecond, levelOK},
		{"6.0.9", 100 * time.Millisecond, levelWarn},
		{"5.0.7", time.Second, levelWarn},
		{"5.0.7", 500 * time.Millisecond, levelFail},
		{"", time.Second, levelWarn},
	} {
		got := checkVersion(tc.version, nil, tc.blockSlice)
		if got.Level != tc.level {
			t.Errorf("version %q, block_slice %v: got %s, want %s", tc.version, tc.blockSlice, got.Level, tc.level)
		}
	}
	wantFinding(t, checkVersion("", errDenied, time.Second), levelWarn, "unknown")
}

func TestKernelFindingsReadTheSettingsBelowTheRoot(t *testing.T) {
	got := kernelFindings(fakeProc())
	want := []struct{ check, value string }{
		{"kernel.tcp_keepalive_time", "7200s"},
		{"kernel.tcp_keepalive_intvl", "75s"},
		{"kernel.tcp_keepalive_probes", "9"},
		{"kernel.tcp_retries2", "15"},
	}
	if len(got) != len(want) {
		t.Fatalf("got %d findings, want %d: %+v", len(got), len(want), got)
	}
	for i, w := range want {
		if got[i].Check != w.check || got[i].Level != levelInfo || got[i].Value != w.value {
			t.Errorf("finding %d: got %s %s %q, want INFO %s %q", i, got[i].Level, got[i].Check, got[i].Value, w.check, w.value)
		}
	}
	// 7200 s + 9 × 75 s; 15 retries from 200 ms: 204.6 s doubling, then 6 × 120 s.
	if !strings.Contains(got[0].Why, "vanished server 2h11m15s after the last traffic") {
		t.Errorf("tcp_keepalive_time: got why %q, want the keepalive bound 2h11m15s", got[0].Why)
	}
	if !strings.Contains(got[3].Why, "15m24.6s or more") {
		t.Errorf("tcp_retries2: got why %q, want 15m24.6s", got[3].Why)
	}
}

func TestKernelFindingsSayWhatCannotBeRead(t *testing.T) {
	root := fakeProc()
	delete(root, "proc/sys/net/ipv4/tcp_keepalive_probes")
	root["proc/sys/net/ipv4/tcp_retries2"] = &fstest.MapFile{Data: []byte("many\n")}
	got := kernelFindings(root)
	if got[0].Value != "7200s" || strings.Contains(got[0].Why, "vanished server") {
		t.Errorf("tcp_keepalive_time: got %q, %q, want 7200s and no keepalive bound without the probe count", got[0].Value, got[0].Why)
	}
	for _, f := range got[2:] {
		if f.Level != levelInfo || f.Value != "unknown" || f.Fix != "" {
			t.Errorf("%s: got %s %q fix %q, want INFO unknown with no fix", f.Check, f.Level, f.Value, f.Fix)
		}
	}
}

func TestRetransmitTimeoutDoublesFrom200msUpTo120s(t *testing.T) {
	for retries, want := range map[int64]time.Duration{
		0:  200 * time.Millisecond,
		3:  3 * time.Second,
		8:  102200 * time.Millisecond,
		9:  204600 * time.Millisecond,
		10: 324600 * time.Millisecond,
		15: 924600 * time.Millisecond, // Linux's default: "about 15 minutes"
	} {
		if got := retransmitTimeout(retries); got != want {
			t.Errorf("retransmitTimeout(%d): got %v, want %v", retries, got, want)
		}
	}
}

func TestPoolFindingsTurnEachWarningIntoAWarnAndTheBoundsIntoInfo(t *testing.T) {
	p, err := redisalive.NewPool(redisalive.Options{Addr: "127.0.0.1:6379", Password: "secret"})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	got := poolFindings(p.Options(), p.Bounds(), []string{"BlockSlice 2m0s: a blocking read on a dead link is noticed only after 2m0.5s"})
	last := got[len(got)-1]
	if last.Check != "pool.warnings" || last.Level != levelWarn || last.Value != "BlockSlice 2m0s" ||
		last.Why != "a blocking read on a dead link is noticed only after 2m0.5s" {
		t.Errorf("warning: got %+v, want WARN pool.warnings with the setting as value and the rest as why", last)
	}
	for _, f := range got[:len(got)-1] {
		if f.Level != levelInfo {
			t.Errorf("%s: got %s, want INFO", f.Check, f.Level)
		}
	}
	if got[0].Check != "pool.options" || strings.Contains(got[0].Value, "secret") {
		t.Errorf("options: got %+v, want pool.options first, without the password", got[0])
	}
}
