package redisalive_test

import (
	"crypto/tls"
	"errors"
	"fmt"
	"math"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/redisalive/redisalive"
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
	} {
		p, err := redisalive.NewPool(o)
		require.NoError(t, err, "NewPool(%+v)", o)
		require.NoError(t, p.Close())
	}
}

func TestNewPoolAcceptsZeroOptionsButAddr(t *testing.T) {
	p, err := redisalive.NewPool(redisalive.Options{Addr: "127.0.0.1:1"})
	require.NoError(t, err)
	require.NoError(t, p.Close())
	p, err = redisalive.NewPool(redisalive.Options{Addr: "/run/redis.sock"})
	require.NoError(t, err, "a path selects the unix network")
	require.NoError(t, p.Close())
}

func TestParseURL(t *testing.T) {
	cases := []struct {
		url  string
		want redisalive.Options
	}{
		{"redis://localhost", redisalive.Options{Network: "tcp", Addr: "localhost:6379"}},
		{"redis://:secret@10.0.0.1:6380/2", redisalive.Options{Network: "tcp", Addr: "10.0.0.1:6380", Password: "secret", DB: 2}},
		{"redis://bob:secret@h:1/0?read_timeout=250ms&max_active=7&block_slice=2s",
			redisalive.Options{Network: "tcp", Addr: "h:1", Username: "bob", Password: "secret", ReadTimeout: 250 * time.Millisecond, MaxActive: 7, BlockSlice: 2 * time.Second}},
		{"unix:///run/redis.sock?db=3", redisalive.Options{Network: "unix", Addr: "/run/redis.sock", DB: 3}},
	}
	for _, tc := range cases {
		got, err := redisalive.ParseURL(tc.url)
		require.NoError(t, err, tc.url)
		assert.Equal(t, tc.want, got, tc.url)
	}

	tlsOpts, err := redisalive.ParseURL("rediss://cache.example:6390")
	require.NoError(t, err)
	require.NotNil(t, tlsOpts.TLSConfig)
	assert.Equal(t, "cache.example", tlsOpts.TLSConfig.ServerName)

	for _, bad := range []string{
		"http://h", "redis://", "redis://h/x", "redis://h/-1", "unix://", "redis://h?nope=1", "redis://h?read_timeout=soon", "::",
	} {
		_, err := redisalive.ParseURL(bad)
		assert.Error(t, err, "ParseURL(%q): got no error", bad)
	}
	_, err = redisalive.ParseURL("redis://u:hunter2@h?nope=1")
	assert.NotContains(t, err.Error(), "hunter2", "errors must not leak the password")
}

func tlsConfig() *tls.Config { return &tls.Config{MinVersion: tls.VersionTLS12} }
