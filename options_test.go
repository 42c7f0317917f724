package redisalive_test

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/redisalive/redisalive"
	"github.com/redisalive/redisalive/internal/testkit"
)

func TestNewPoolRejectsEachInvalidOptionNamingTheField(t *testing.T) {
	valid := redisalive.Options{Addr: "127.0.0.1:6379"}
	cases := []struct {
		field string
		edit  func(*redisalive.Options)
	}{
		{"Addr", func(o *redisalive.Options) { o.Addr = "" }},
		{"Addr", func(o *redisalive.Options) { o.Addr = "no-port" }},
		{"Network", func(o *redisalive.Options) { o.Network = "udp" }},
		{"Password", func(o *redisalive.Options) { o.Username = "bob" }},
		{"DB", func(o *redisalive.Options) { o.DB = -1 }},
		{"DialTimeout", func(o *redisalive.Options) { o.DialTimeout = -time.Second }},
		{"ReadTimeout", func(o *redisalive.Options) { o.ReadTimeout = -1 }},
		{"WriteTimeout", func(o *redisalive.Options) { o.WriteTimeout = -1 }},
		{"PoolTimeout", func(o *redisalive.Options) { o.PoolTimeout = -1 }},
		{"IdleTimeout", func(o *redisalive.Options) { o.IdleTimeout = -1 }},
		{"MaxConnLifetime", func(o *redisalive.Options) { o.MaxConnLifetime = -1 }},
		{"KeepAlive.Idle", func(o *redisalive.Options) { o.KeepAlive.Idle = -1 }},
		{"KeepAlive.Interval", func(o *redisalive.Options) { o.KeepAlive.Interval = -1 }},
		{"KeepAlive.Count", func(o *redisalive.Options) { o.KeepAlive.Count = -1 }},
		{"TCPUserTimeout", func(o *redisalive.Options) { o.TCPUserTimeout = -1 }},
		{"HealthCheckInterval", func(o *redisalive.Options) { o.HealthCheckInterval = -1 }},
		{"BlockSlice", func(o *redisalive.Options) { o.BlockSlice = -1 }},
		{"BlockSlice", func(o *redisalive.Options) { o.BlockSlice = time.Millisecond }},
		{"LeakDetectionThreshold", func(o *redisalive.Options) { o.LeakDetectionThreshold = -1 }},
		{"MaxActive", func(o *redisalive.Options) { o.MaxActive = -1 }},
		{"MaxIdle", func(o *redisalive.Options) { o.MaxIdle = -1 }},
		{"MaxIdle", func(o *redisalive.Options) { o.MaxActive, o.MaxIdle = 2, 3 }},
		{"TLSConfig", func(o *redisalive.Options) { o.Network, o.Addr, o.TLSConfig = "unix", "/tmp/x.sock", tlsConfig() }},

		// Values that cannot work, or contradict each other.
		{"Addr", func(o *redisalive.Options) { o.Addr = "127.0.0.1:99999" }},
		{"Addr", func(o *redisalive.Options) { o.Addr = "127.0.0.1:0" }},
		{"Addr", func(o *redisalive.Options) { o.Addr = "127.0.0.1:" }},
		{"DialTimeout", func(o *redisalive.Options) { o.DialTimeout = time.Millisecond }},
		{"ReadTimeout", func(o *redisalive.Options) { o.ReadTimeout = time.Nanosecond }},
		{"WriteTimeout", func(o *redisalive.Options) { o.WriteTimeout = 9 * time.Millisecond }},
		{"ReadTimeout", func(o *redisalive.Options) { o.ReadTimeout = math.MaxInt64 }},
		{"WriteTimeout", func(o *redisalive.Options) { o.WriteTimeout = math.MaxInt64 }},
		{"BlockSlice", func(o *redisalive.Options) { o.BlockSlice = math.MaxInt64 }},
		// Timeouts the pool adds to others: past 292 years the sum wraps
		// negative and every wait bounded by it ends at once.
		{"DialTimeout", func(o *redisalive.Options) { o.DialTimeout = math.MaxInt64 }},
		{"PoolTimeout", func(o *redisalive.Options) { o.PoolTimeout = math.MaxInt64 }},
		// A queue of this many slots per shared connection, made on first use.
		{"PipelineDepth", func(o *redisalive.Options) { o.AutoPipeline, o.PipelineDepth = true, 1<<50 }},
		{"PipelineConns", func(o *redisalive.Options) {
			o.AutoPipeline, o.MaxActive, o.PipelineConns = true, math.MaxInt, math.MaxInt-1
		}},
		{"TCPUserTimeout", func(o *redisalive.Options) { o.TCPUserTimeout = time.Millisecond }},
		{"TCPUserTimeout", func(o *redisalive.Options) { o.TCPUserTimeout = 25 * 24 * time.Hour }},
		{"KeepAlive", func(o *redisalive.Options) { o.KeepAlive = redisalive.KeepAlive{Disable: true, Idle: time.Second} }},
		{"KeepAlive", func(o *redisalive.Options) { o.KeepAlive = redisalive.KeepAlive{Disable: true, Count: 1} }},
		{"KeepAlive.Idle", func(o *redisalive.Options) { o.KeepAlive.Idle = 32768 * time.Second }},
		{"KeepAlive.Interval", func(o *redisalive.Options) { o.KeepAlive.Interval = 10 * time.Hour }},
		{"KeepAlive.Count", func(o *redisalive.Options) { o.KeepAlive.Count = 128 }},
	}
	for i, tc := range cases {
		t.Run(fmt.Sprintf("%d_%s", i, tc.field), func(t *testing.T) {
			o := valid
			tc.edit(&o)
			p, err := redisalive.NewPool(o)
			if p != nil {
				p.Close()
			}
			require.Error(t, err, "got a pool from %+v, want an error", o)
			assert.ErrorIs(t, err, redisalive.ErrInvalidOptions)
			var oe *redisalive.OptionError
			require.True(t, errors.As(err, &oe), "got %T, want *OptionError", err)
			assert.Equal(t, tc.field, oe.Field, "error: %v", err)
			assert.Contains(t, err.Error(), "Options."+tc.field)
		})
	}
}

func TestNewPoolAcceptsEveryBoundItself(t *testing.T) {
	for _, o := range []redisalive.Options{
		{Addr: "127.0.0.1:1", DialTimeout: 10 * time.Millisecond, ReadTimeout: 10 * time.Millisecond, WriteTimeout: 10 * time.Millisecond},
		{Addr: "127.0.0.1:65535", TCPUserTimeout: 100 * time.Millisecond, BlockSlice: 10 * time.Millisecond},
		{Addr: "localhost:redis", TCPUserTimeout: math.MaxInt32 * time.Millisecond},
		{Addr: "127.0.0.1:1", KeepAlive: redisalive.KeepAlive{Idle: 32767 * time.Second, Interval: 32767 * time.Second, Count: 127}},
		{Addr: "127.0.0.1:1", KeepAlive: redisalive.KeepAlive{Disable: true}},
		{Addr: "127.0.0.1:1", ReadTimeout: 100 * 365 * 24 * time.Hour, WriteTimeout: 100 * 365 * 24 * time.Hour, BlockSlice: 100 * 365 * 24 * time.Hour},
		{Addr: "127.0.0.1:1", DialTimeout: 100 * 365 * 24 * time.Hour, PoolTimeout: 100 * 365 * 24 * time.Hour, HealthCheckInterval: math.MaxInt64},
		{Addr: "127.0.0.1:1", AutoPipeline: true, MaxActive: 100, PipelineConns: redisalive.MaxPipelineConns, PipelineDepth: redisalive.MaxPipelineDepth},
	} {
		p, err := redisalive.NewPool(o)
		require.NoError(t, err, "NewPool(%+v)", o)
		require.NoError(t, p.Close())
	}
}

func TestNewPoolWarnsThroughLoggerOfASettingThatStretchesDetectionPastAMinute(t *testing.T) {
	var logs testkit.LogBuffer
	logger := slog.New(slog.NewTextHandler(&logs, nil))
	p, err := redisalive.NewPool(redisalive.Options{Addr: "127.0.0.1:1", Logger: logger})
	require.NoError(t, err)
	require.NoError(t, p.Close())
	assert.Empty(t, logs.String(), "got warnings for the defaults, want none")

	p, err = redisalive.NewPool(redisalive.Options{Addr: "127.0.0.1:1", Logger: logger, BlockSlice: time.Hour})
	require.NoError(t, err, "a stretched bound is valid, only warned about")
	require.NoError(t, p.Close())
	assert.Contains(t, logs.String(), `level=WARN msg="redisalive: BlockSlice 1h0m0s: a blocking read on a dead link is noticed only after 1h0m0.5s" addr=127.0.0.1:1`)
}

func TestNewPoolAcceptsZeroOptionsButAddr(t *testing.T) {
	p, err := redisalive.NewPool(redisalive.Options{Addr: "127.0.0.1:1"})
	require.NoError(t, err)
	require.NoError(t, p.Close())
	p, err = redisalive.NewPool(redisalive.Options{Addr: "/run/redis.sock"})
	require.NoError(t, err, "a path selects the unix network")
	require.NoError(t, p.Close())
}

func TestParseURLReadsEveryPartOfTheGrammar(t *testing.T) {
	cases := []struct {
		url  string
		want redisalive.Options
	}{
		{"redis://localhost", redisalive.Options{Network: "tcp", Addr: "localhost:6379"}},
		{"redis://localhost:", redisalive.Options{Network: "tcp", Addr: "localhost:6379"}},
		{"redis://[::1]:6380/", redisalive.Options{Network: "tcp", Addr: "[::1]:6380"}},
		{"redis://[fe80::1%25eth0.2]", redisalive.Options{Network: "tcp", Addr: "[fe80::1%eth0.2]:6379"}},
		{"redis://:secret@10.0.0.1:6380/2", redisalive.Options{Network: "tcp", Addr: "10.0.0.1:6380", Password: "secret", DB: 2}},
		{"redis://:@h?db=1", redisalive.Options{Network: "tcp", Addr: "h:6379", DB: 1}},
		{"redis://b%40b:s%2Fe%3Acret@h", redisalive.Options{Network: "tcp", Addr: "h:6379", Username: "b@b", Password: "s/e:cret"}},
		{"redis://bob:secret@h:1/0?read_timeout=250ms&max_active=7&block_slice=2s",
			redisalive.Options{Network: "tcp", Addr: "h:1", Username: "bob", Password: "secret", ReadTimeout: 250 * time.Millisecond, MaxActive: 7, BlockSlice: 2 * time.Second}},
		{"unix:///run/redis.sock?db=3", redisalive.Options{Network: "unix", Addr: "/run/redis.sock", DB: 3}},
		{"unix:/run/redis.sock", redisalive.Options{Network: "unix", Addr: "/run/redis.sock"}},
		{"unix:///run/redis%401.sock", redisalive.Options{Network: "unix", Addr: "/run/redis@1.sock"}},
		{"unix://:secret@/run/redis.sock", redisalive.Options{Network: "unix", Addr: "/run/redis.sock", Password: "secret"}},
	}
	for _, tc := range cases {
		got, err := redisalive.ParseURL(tc.url)
		require.NoError(t, err, tc.url)
		assert.Equal(t, tc.want, got, "ParseURL(%q)", tc.url)
	}

	tlsOpts, err := redisalive.ParseURL("rediss://cache.example:6390")
	require.NoError(t, err)
	require.NotNil(t, tlsOpts.TLSConfig)
	assert.Equal(t, "cache.example", tlsOpts.TLSConfig.ServerName)
}

func TestParseURLReadsASentinelURL(t *testing.T) {
	cases := []struct {
		url  string
		want redisalive.Options
	}{
		{"redis+sentinel://s1:26380,s2/mymaster", redisalive.Options{Network: "tcp",
			Sentinel: &redisalive.SentinelOptions{MasterName: "mymaster", Addrs: []string{"s1:26380", "s2:26379"}}}},
		{"redis+sentinel://:secret@[::1]:26380,[fe80::1%25eth0],10.0.0.3/my%20master/2?sentinel_password=sp&sentinel_refresh_interval=5s&read_timeout=1s",
			redisalive.Options{Network: "tcp", Password: "secret", DB: 2, ReadTimeout: time.Second,
				Sentinel: &redisalive.SentinelOptions{MasterName: "my master", Addrs: []string{"[::1]:26380", "[fe80::1%eth0]:26379", "10.0.0.3:26379"},
					Password: "sp", RefreshInterval: 5 * time.Second}}},
	}
	for _, tc := range cases {
		got, err := redisalive.ParseURL(tc.url)
		require.NoError(t, err, tc.url)
		assert.Equal(t, tc.want, got, "ParseURL(%q)", tc.url)
		again, err := redisalive.ParseURL(formatURL(got))
		require.NoError(t, err, "the URL of ParseURL(%q): %q", tc.url, formatURL(got))
		assert.Equal(t, got, again, "round trip through %q", formatURL(got))
	}
	tlsOpts, err := redisalive.ParseURL("rediss+sentinel://s1/m")
	require.NoError(t, err)
	assert.NotNil(t, tlsOpts.TLSConfig, "TLS to the master")
	assert.NotNil(t, tlsOpts.Sentinel.TLSConfig, "TLS to the sentinels")

	for url, reason := range map[string]string{
		"redis+sentinel:///mymaster":                          "missing sentinels",
		"redis+sentinel://s1":                                 "missing master name",
		"redis+sentinel://s1:0/m":                             `port "0" is not from 1 to 65535`,
		"redis+sentinel://::1/m":                              "ambiguous",
		"redis+sentinel://[::1/m":                             "closing bracket",
		"redis+sentinel://s1,/m":                              "missing host",
		"redis+sentinel://s1/m/x":                             "not a master name and a database number",
		"redis://h?sentinel_password=x":                       "applies only to a redis+sentinel URL",
		"redis+sentinel://s1/m?sentinel_refresh_interval=-1s": "must not be negative",
	} {
		_, err := redisalive.ParseURL(url)
		require.ErrorIs(t, err, redisalive.ErrInvalidURL, url)
		assert.Contains(t, err.Error(), reason, url)
	}
}

func TestParseURLRejectsAmbiguousOrInvalidURLsNamingThePartWithoutThePassword(t *testing.T) {
	cases := []struct{ url, redacted, reason string }{
		{"redis://:hunter2@127.0.0.1:99999", "redis://:xxxxx@127.0.0.1:99999", "port 99999 is not from 1 to 65535"},
		{"redis://:hunter2@h:0", "redis://:xxxxx@h:0", "port 0 is not from 1 to 65535"},
		{"redis://u:hunter2@h:port", "redis://u:xxxxx@h:port", `invalid port ":port" after host`},
		{"redis://:hunter2@", "redis://:xxxxx@", "missing host, as in redis://localhost:6379"},
		{"redis://:hunter2@::1", "redis://:xxxxx@::1", `host and port "::1" are ambiguous: an IPv6 address goes in brackets, as in redis://[::1]:6379`},
		{"redis://:hunter2@h:1:2", "redis://:xxxxx@h:1:2", `host and port "h:1:2" are ambiguous: an IPv6 address goes in brackets, as in redis://[::1]:6379`},
		{"redis:h", "redis:h", "missing host, as in redis://localhost:6379"},
		{"redis://:hunter2@[::%25\x88]", "redis://:xxxxx@[::%25\x88]", `IPv6 zone "\x88" is not an interface name or index, as in redis://[fe80::1%25eth0]:6379`},
		{"http://:hunter2@h", "http://:xxxxx@h", `scheme "http", want redis, rediss, unix, redis+sentinel or rediss+sentinel`},
		{"::", "::", "missing protocol scheme"},
		{"redis://:hunter2@h#top", "redis://:xxxxx@h#top", "a fragment (#...) has no meaning in a Redis URL"},

		{"redis://hunter2@h", "redis://xxxxx@h",
			"user info without a colon could be a user name or a password: write :password@ for a password alone, user:password@ for both"},
		{"redis://u:hunter2/x@h", "redis://u:xxxxx@h",
			`malformed user info: %-escape any '/', '?', '#', '@' or '%' in the user name or password`},
		{"redis://u:@h", "redis://u:xxxxx@h", "user info: a Username needs a Password"},
		{"redis://u:6379/hunter2@h", "redis://u:xxxxx@h",
			`'@' outside the user info: %-escape any '/', '?' or '#' in the password, and write an '@' elsewhere as %40`},
		{"unix:///run/redis@1.sock", "unix://xxxxx@1.sock",
			`'@' outside the user info: %-escape any '/', '?' or '#' in the password, and write an '@' elsewhere as %40`},

		{"redis://:hunter2@h/x", "redis://:xxxxx@h/x", `path "/x" is not a database number such as /0 or /2`},
		{"redis://:hunter2@h/-1", "redis://:xxxxx@h/-1", `path "/-1" is not a database number such as /0 or /2`},
		{"redis://:hunter2@h/2/", "redis://:xxxxx@h/2/", `path "/2/" is not a database number such as /0 or /2`},
		{"redis://:hunter2@h/2?db=3", "redis://:xxxxx@h/2?db=3", `DB is given twice: path "/2" and option db="3"`},
		{"rediss://:hunter2@h/2?db=2", "rediss://:xxxxx@h/2?db=2", `DB is given twice: path "/2" and option db="2"`},

		{"unix://:hunter2@host/tmp/x.sock", "unix://:xxxxx@host/tmp/x.sock",
			`host "host" in a unix URL: the socket path starts at the third slash, as in unix:///run/redis.sock`},
		{"unix://", "unix://", "missing socket path, as in unix:///run/redis.sock"},
		{"unix:///", "unix:///", `socket path "/" names a directory`},
		{"unix://:hunter2@/tmp/?db=1", "unix://:xxxxx@/tmp/?db=1", `socket path "/tmp/" names a directory`},

		{"redis://:hunter2@h?read_timeout=1s&read_timeout=2s", "redis://:xxxxx@h?read_timeout=1s&read_timeout=2s", "option read_timeout given 2 times"},
		{"redis://:hunter2@h?nope=1", "redis://:xxxxx@h?nope=1",
			`unknown option "nope" (known: block_slice, db, dial_timeout, health_check_interval, idle_timeout, max_active, max_conn_lifetime, max_idle, pool_timeout, read_timeout, sentinel_password, sentinel_refresh_interval, sentinel_username, tcp_user_timeout, write_timeout)`},
		{"redis://:hunter2@h?db=1;x=2", "redis://:xxxxx@h?db=1;x=2", "malformed query: invalid semicolon separator in query"},
		{"redis://:hunter2@h?read_timeout=soon", "redis://:xxxxx@h?read_timeout=soon", `option read_timeout="soon" is not a duration such as 250ms or 3s`},
		{"redis://:hunter2@h?max_active=x", "redis://:xxxxx@h?max_active=x", `option max_active="x" is not a whole number`},
		{"redis://:hunter2@h?db=-1", "redis://:xxxxx@h?db=-1", `option db="-1": must not be negative`},
		{"redis://:hunter2@h?dial_timeout=-1s", "redis://:xxxxx@h?dial_timeout=-1s", `option dial_timeout="-1s": must not be negative (zero selects the default)`},
		{"redis://:hunter2@h?read_timeout=1ns", "redis://:xxxxx@h?read_timeout=1ns", `option read_timeout="1ns": must be at least 10ms`},
		{"redis://:hunter2@h?tcp_user_timeout=1ms", "redis://:xxxxx@h?tcp_user_timeout=1ms", `option tcp_user_timeout="1ms": must be at least 100ms`},
		{"redis://:hunter2@h?max_active=2&max_idle=3", "redis://:xxxxx@h?max_active=2&max_idle=3", `option max_idle="3": must not exceed MaxActive (2)`},
	}
	for i, tc := range cases {
		t.Run(strconv.Itoa(i), func(t *testing.T) {
			got, err := redisalive.ParseURL(tc.url)
			require.Error(t, err, "ParseURL(%q): got %+v, want an error", tc.url, got)
			assert.Equal(t, redisalive.Options{}, got, "ParseURL(%q) failed but returned options", tc.url)
			want := fmt.Sprintf("redisalive: parse URL %q: %s", tc.redacted, tc.reason)
			assert.Equal(t, want, err.Error(), "ParseURL(%q)", tc.url)
			assert.NotContains(t, err.Error(), "hunter2", "ParseURL(%q): the error shows the password", tc.url)
			assert.ErrorIs(t, err, redisalive.ErrInvalidURL, "ParseURL(%q)", tc.url)
		})
	}
}

func TestParseURLErrorsForValuesNewPoolWouldRejectCarryTheOptionError(t *testing.T) {
	_, err := redisalive.ParseURL("redis://h?read_timeout=1ns")
	assert.ErrorIs(t, err, redisalive.ErrInvalidOptions)
	var oe *redisalive.OptionError
	require.ErrorAs(t, err, &oe)
	assert.Equal(t, "ReadTimeout", oe.Field)

	_, err = redisalive.ParseURL("redis://h?read_timeout=soon")
	assert.NotErrorIs(t, err, redisalive.ErrInvalidOptions, "a value that is not a duration is a URL error only")
}

func tlsConfig() *tls.Config { return &tls.Config{MinVersion: tls.VersionTLS12} }

// FuzzParseURL checks that ParseURL never panics, that every error matches
// ErrInvalidURL and hides the password, that NewPool accepts whatever
// ParseURL accepts, and that the Options written back as a URL parse to
// the same Options.
func FuzzParseURL(f *testing.F) {
	for _, seed := range []string{
		"redis://localhost", "redis://:hunter2@10.0.0.1:6380/2", "rediss://bob:hunter2@cache.example:6390/0?read_timeout=250ms",
		"unix:///run/redis.sock?db=3", "unix://:hunter2@/run/redis.sock", "redis://[::1]:6380/", "redis://b%40b:s%2Fe%3Acret@h",
		"redis://[fe80::1%25eth0]:6379", "unix:///tmp/a%3Fb%20c.sock",
		"redis://h?db=1&dial_timeout=1s&read_timeout=1s&write_timeout=1s&pool_timeout=1s&idle_timeout=1m&max_conn_lifetime=1h" +
			"&health_check_interval=15s&block_slice=1s&tcp_user_timeout=20s&max_active=4&max_idle=2",
		// Inputs that were once accepted by mistake.
		"redis://127.0.0.1:99999", "redis://h:0", "redis://h/2?db=3", "redis://h?read_timeout=1s&read_timeout=2s",
		"redis://hunter2@host", "unix://host/tmp/x.sock", "unix:///", "redis://h?read_timeout=1ns",
		"redis://h?block_slice=1h", "redis://h?tcp_user_timeout=1ms", "redis://h?max_active=2&max_idle=3",
		"redis://u:hunter2/x@h", "redis://u:hunter2@h:port", "redis://u:hun%zzter2@h", "redis://h#top", "redis://h?db=1;x=2",
		"redis://h/-1", "redis://h/+1", "redis://h//2", "::", "redis:h", "http://h", "redis:u:hunter2@h",
		"redis+sentinel://:hunter2@s1:26380,[::1],s3/mymaster/2?sentinel_password=hunter2", "rediss+sentinel://s1/m",
		"redis+sentinel://s1/", "redis+sentinel://[::1/m", "redis+sentinel://s1,,s2/m",
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		o, err := redisalive.ParseURL(raw)
		if err != nil {
			if !errors.Is(err, redisalive.ErrInvalidURL) {
				t.Fatalf("ParseURL(%q): got error %q, want one matching ErrInvalidURL", raw, err)
			}
			if !strings.HasPrefix(err.Error(), `redisalive: parse URL "`) {
				t.Fatalf(`ParseURL(%q): got error %q, want it to start with 'redisalive: parse URL "'`, raw, err)
			}
			if passwordHasMarker(raw) && strings.Contains(err.Error(), "hunter2") {
				t.Fatalf("ParseURL(%q): got error %q, which shows the password", raw, err)
			}
			return
		}
		p, err := redisalive.NewPool(o)
		if err != nil {
			t.Fatalf("ParseURL(%q) = %+v, which NewPool rejects: %v", raw, o, err)
		}
		if err := p.Close(); err != nil {
			t.Fatalf("Close: got %v, want nil", err)
		}
		again, err := redisalive.ParseURL(formatURL(o))
		if err != nil {
			t.Fatalf("ParseURL(%q), the URL of ParseURL(%q): %v", formatURL(o), raw, err)
		}
		if !reflect.DeepEqual(o, again) {
			t.Fatalf("ParseURL(%q) = %+v, but its URL %q parses to %+v", raw, o, formatURL(o), again)
		}
	})
}

// passwordHasMarker reports whether "hunter2" occurs in raw exactly once,
// inside what a reader could take for the password: after the scheme's
// "://" if any, before the last '@', and not before the first ':' between
// them, which ends a user name. User info without a colon counts, as
// redis-cli reads it as a password.
func passwordHasMarker(raw string) bool {
	if strings.Count(raw, "hunter2") != 1 {
		return false
	}
	rest := raw
	if _, afterScheme, ok := strings.Cut(raw, "://"); ok {
		rest = afterScheme
	}
	at := strings.LastIndex(rest, "@")
	if at < 0 {
		return false
	}
	userinfo := rest[:at]
	if _, password, hasColon := strings.Cut(userinfo, ":"); hasColon {
		userinfo = password
	}
	return strings.Contains(userinfo, "hunter2")
}

// FuzzNewPool checks that NewPool never panics on any Options and either
// rejects them with an *OptionError matching ErrInvalidOptions or returns
// a pool that closes cleanly.
func FuzzNewPool(f *testing.F) {
	valid := redisalive.Options{Addr: "127.0.0.1:6379"}
	with := func(edit func(*redisalive.Options)) redisalive.Options {
		o := valid
		edit(&o)
		return o
	}
	for _, o := range []redisalive.Options{
		valid,
		{Network: "unix", Addr: "/run/redis.sock", Username: "bob", Password: "secret", DB: 3},
		// Inputs that were once accepted by mistake.
		with(func(o *redisalive.Options) { o.ReadTimeout = time.Nanosecond }),
		with(func(o *redisalive.Options) { o.BlockSlice = time.Hour }),
		with(func(o *redisalive.Options) { o.TCPUserTimeout = time.Millisecond }),
		with(func(o *redisalive.Options) { o.KeepAlive = redisalive.KeepAlive{Disable: true, Idle: time.Second} }),
		with(func(o *redisalive.Options) { o.KeepAlive = redisalive.KeepAlive{Disable: true} }),
		with(func(o *redisalive.Options) { o.HealthCheckInterval = time.Hour }),
		with(func(o *redisalive.Options) { o.ReadTimeout, o.WriteTimeout = math.MaxInt64, math.MaxInt64 }),
		with(func(o *redisalive.Options) {
			o.KeepAlive = redisalive.KeepAlive{Idle: 32767 * time.Second, Interval: 32767 * time.Second, Count: 127}
		}),
		with(func(o *redisalive.Options) { o.KeepAlive.Count = 128 }),
		with(func(o *redisalive.Options) { o.TCPUserTimeout = 25 * 24 * time.Hour }),
		with(func(o *redisalive.Options) { o.Addr = "127.0.0.1:99999" }),
		with(func(o *redisalive.Options) { o.MaxActive, o.MaxIdle = 2, 3 }),
		with(func(o *redisalive.Options) {
			o.LeakDetectionThreshold, o.IdleTimeout = time.Nanosecond, time.Nanosecond
		}),
		with(func(o *redisalive.Options) { o.Network, o.TLSConfig = "unix", tlsConfig() }),
	} {
		f.Add(o.Network, o.Addr, o.Username, o.Password, o.DB, o.TLSConfig != nil,
			int64(o.DialTimeout), int64(o.ReadTimeout), int64(o.WriteTimeout), int64(o.PoolTimeout),
			o.MaxActive, o.MaxIdle, int64(o.IdleTimeout), int64(o.MaxConnLifetime),
			o.KeepAlive.Disable, int64(o.KeepAlive.Idle), int64(o.KeepAlive.Interval), o.KeepAlive.Count,
			int64(o.TCPUserTimeout), int64(o.HealthCheckInterval), int64(o.BlockSlice), int64(o.LeakDetectionThreshold))
	}
	f.Fuzz(func(t *testing.T, network, addr, username, password string, db int, useTLS bool,
		dial, read, write, poolWait int64, maxActive, maxIdle int, idle, lifetime int64,
		kaDisable bool, kaIdle, kaInterval int64, kaCount int,
		userTimeout, health, slice, leak int64,
	) {
		o := redisalive.Options{
			Network: network, Addr: addr, Username: username, Password: password, DB: db,
			DialTimeout: time.Duration(dial), ReadTimeout: time.Duration(read),
			WriteTimeout: time.Duration(write), PoolTimeout: time.Duration(poolWait),
			MaxActive: maxActive, MaxIdle: maxIdle,
			IdleTimeout: time.Duration(idle), MaxConnLifetime: time.Duration(lifetime),
			KeepAlive: redisalive.KeepAlive{
				Disable: kaDisable, Idle: time.Duration(kaIdle), Interval: time.Duration(kaInterval), Count: kaCount,
			},
			TCPUserTimeout: time.Duration(userTimeout), HealthCheckInterval: time.Duration(health),
			BlockSlice: time.Duration(slice), LeakDetectionThreshold: time.Duration(leak),
		}
		if useTLS {
			o.TLSConfig = tlsConfig()
		}
		p, err := redisalive.NewPool(o)
		if err != nil {
			var oe *redisalive.OptionError
			if !errors.As(err, &oe) || !errors.Is(err, redisalive.ErrInvalidOptions) {
				t.Fatalf("NewPool(%+v): got %T %q, want an *OptionError matching ErrInvalidOptions", o, err, err)
			}
			if !strings.HasPrefix(err.Error(), "redisalive: invalid Options."+oe.Field+" = ") {
				t.Fatalf("NewPool(%+v): got error %q, want it to name Options.%s", o, err, oe.Field)
			}
			if p != nil {
				t.Fatalf("NewPool(%+v): got a pool with error %q, want nil", o, err)
			}
			return
		}
		if err := p.Close(); err != nil {
			t.Fatalf("NewPool(%+v).Close(): got %v, want nil", o, err)
		}
	})
}

func TestDefaultOptionsGiveTheFaultModelsBounds(t *testing.T) {
	p, err := redisalive.NewPool(redisalive.Options{Addr: "127.0.0.1:1"})
	require.NoError(t, err)
	defer p.Close()
	assert.Equal(t, redisalive.Bounds{
		DeadIdle:       18 * time.Second,
		ServerClosed:   time.Second,
		SilentPeer:     20 * time.Second,
		Unacknowledged: 20 * time.Second,
		BlockingRead:   1500 * time.Millisecond,
		Subscription:   4 * time.Second,
		Checkout:       4 * time.Second,
		Command:        34 * time.Second,
		Close:          6 * time.Second,
	}, p.Bounds())
	o := p.Options()
	assert.Equal(t, redisalive.DefaultReadTimeout, o.ReadTimeout, "effective options have the defaults filled in")
	assert.Equal(t, 20*time.Second, o.TCPUserTimeout)
	again, err := redisalive.NewPool(o)
	require.NoError(t, err, "a pool's effective options make an equal pool")
	defer again.Close()
	assert.Equal(t, p.Bounds(), again.Bounds())
}
