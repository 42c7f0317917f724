package redisalive

import (
	"math"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestDefaultUserTimeoutIsCappedAtWhatTheKernelTakes(t *testing.T) {
	ka := KeepAlive{Idle: maxKeepAliveTime, Interval: maxKeepAliveTime, Count: maxKeepAliveCount}
	c, err := newConfig(Options{Addr: "h:1", KeepAlive: ka})
	require.NoError(t, err)
	assert.Equal(t, maxUserTimeout, c.userTimeout, "got %v, want the 32-bit millisecond limit %v", c.userTimeout, maxUserTimeout)

	c, err = newConfig(Options{Addr: "h:1"})
	require.NoError(t, err)
	assert.Equal(t, 20*time.Second, c.userTimeout, "got %v, want Idle + Interval × Count with the defaults", c.userTimeout)
}

func TestWarningsSayWhatEachDetectionBoundBecomesPastAMinute(t *testing.T) {
	if !userTimeoutApplies {
		t.Skip("the keepalive bounds below are Linux's, where TCP_USER_TIMEOUT ends probing")
	}
	cases := []struct {
		name string
		opts Options
		want []string
	}{
		{"defaults", Options{}, nil},
		{"every bound just inside a minute", Options{
			BlockSlice: 59 * time.Second, HealthCheckInterval: 57 * time.Second,
			KeepAlive: KeepAlive{Idle: 30 * time.Second, Interval: 10 * time.Second, Count: 3}, TCPUserTimeout: time.Minute,
		}, nil},
		{"a long BlockSlice", Options{BlockSlice: time.Hour}, []string{
			"BlockSlice 1h0m0s: a blocking read on a dead link is noticed only after 1h0m0.5s",
		}},
		{"a long HealthCheckInterval", Options{HealthCheckInterval: 10 * time.Minute}, []string{
			"HealthCheckInterval 10m0s, ReadTimeout 3s: an idle connection on a dead link is found and closed only after 10m3s",
		}},
		{"health checks as good as off", Options{HealthCheckInterval: math.MaxInt64}, []string{
			"HealthCheckInterval 2562047h47m16.854775807s, ReadTimeout 3s: an idle connection on a dead link is found and closed only after 2562047h47m16.854775807s",
		}},
		{"a long ReadTimeout", Options{ReadTimeout: 2 * time.Minute}, []string{
			"HealthCheckInterval 15s, ReadTimeout 2m0s: an idle connection on a dead link is found and closed only after 2m15s",
			"PubSubPingInterval 1s, ReadTimeout 2m0s: a quiet subscription on a dead link is noticed only after 2m1s",
		}},
		{"keepalive off", Options{KeepAlive: KeepAlive{Disable: true}}, []string{
			"KeepAlive.Disable: a silent peer of an idle connection is never noticed by the kernel; the health check finds it in the pool after 18s, never while a caller holds it",
		}},
		{"a long keepalive idle time", Options{KeepAlive: KeepAlive{Idle: time.Hour}, TCPUserTimeout: 3 * time.Second}, []string{
			"KeepAlive {Idle:1h0m0s Interval:5s Count:3}, TCPUserTimeout 3s: the kernel notices a silent peer of an idle connection only after 1h0m5s",
		}},
		{"many keepalive probes", Options{KeepAlive: KeepAlive{Interval: 30 * time.Second, Count: 9}}, []string{
			"KeepAlive {Idle:5s Interval:30s Count:9}, TCPUserTimeout 4m35s: the kernel notices a silent peer of an idle connection only after 4m35s",
			"TCPUserTimeout 4m35s: data written to a dead link fails only after 4m35s plus one retransmission timeout",
		}},
		{"a long TCPUserTimeout", Options{TCPUserTimeout: 5 * time.Minute}, []string{
			"KeepAlive {Idle:5s Interval:5s Count:3}, TCPUserTimeout 5m0s: the kernel notices a silent peer of an idle connection only after 5m0s",
			"TCPUserTimeout 5m0s: data written to a dead link fails only after 5m0s plus one retransmission timeout",
		}},
	}
	for _, tc := range cases {
		tc.opts.Addr = "h:1"
		c, err := newConfig(tc.opts)
		require.NoError(t, err, tc.name)
		assert.Equal(t, tc.want, c.warnings(), tc.name)
	}
}

func TestKeepAliveBoundFollowsLinuxProbeTimer(t *testing.T) {
	ka := KeepAlive{Idle: 10 * time.Second, Interval: 5 * time.Second, Count: 3}
	cases := []struct {
		userTimeout, want time.Duration
	}{
		{0, 25 * time.Second},                // Count probes unanswered
		{25 * time.Second, 25 * time.Second}, // the default: the same bound
		{time.Second, 15 * time.Second},      // never before the second probe
		{26 * time.Second, 30 * time.Second}, // the first probe at or past the user timeout
		{time.Minute, 60 * time.Second},      // Count no longer ends probing
	}
	for _, tc := range cases {
		got := keepAliveBound(ka, tc.userTimeout)
		assert.Equal(t, tc.want, got, "userTimeout %v: got %v, want %v", tc.userTimeout, got, tc.want)
	}
}
