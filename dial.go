package redisalive

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"time"
)

// dialSocket opens the socket for a new connection and gives it the pool's
// keepalive and TCP_USER_TIMEOUT settings before anything is sent on it.
// The socket is dialled here rather than by redigo so that the pool keeps
// the raw net.Conn: the checkout peek needs its file descriptor.
func (cfg *config) dialSocket(ctx context.Context, deadline time.Time) (net.Conn, error) {
	d := net.Dialer{Deadline: deadline, KeepAlive: -1}
	nc, err := d.DialContext(ctx, cfg.network, cfg.addr)
	if err != nil {
		return nil, err
	}
	if tc, ok := nc.(*net.TCPConn); ok {
		if err := cfg.tuneTCP(tc); err != nil {
			nc.Close()
			return nil, err
		}
	}
	if cfg.tls != nil {
		tlsConf := cfg.tls.Clone()
		if tlsConf.ServerName == "" {
			tlsConf.ServerName, _, _ = net.SplitHostPort(cfg.addr)
		}
		tc := tls.Client(nc, tlsConf)
		nc.SetDeadline(deadline) // bounds the handshake; every command sets its own
		if err := tc.HandshakeContext(ctx); err != nil {
			nc.Close()
			return nil, err
		}
		return tc, nil
	}
	return nc, nil
}

// tuneTCP sets keepalive idle, interval and count explicitly, because an
// on/off switch alone leaves the kernel's two-hour defaults in force, and
// TCP_USER_TIMEOUT, the only bound on a connection whose written data is
// never acknowledged.
func (cfg *config) tuneTCP(tc *net.TCPConn) error {
	ka := cfg.keepAlive
	if err := tc.SetKeepAliveConfig(net.KeepAliveConfig{
		Enable:   !ka.Disable,
		Idle:     ka.Idle,
		Interval: ka.Interval,
		Count:    ka.Count,
	}); err != nil {
		return fmt.Errorf("set keepalive: %w", err)
	}
	if err := setUserTimeout(tc, cfg.userTimeout); err != nil {
		return fmt.Errorf("set TCP_USER_TIMEOUT: %w", err)
	}
	return nil
}

// connect dials and prepares a new connection: socket options, AUTH and
// SELECT, all before deadline.
func (cfg *config) connect(ctx context.Context, deadline, now time.Time) (*conn, error) {
	nc, err := cfg.dialSocket(ctx, deadline)
	if err != nil {
		return nil, err
	}
	c := newConn(nc, cfg, now)
	var setup []func() (any, error)
	if cfg.password != "" {
		setup = append(setup, func() (any, error) {
			if cfg.username != "" {
				return c.rc.Do("AUTH", cfg.username, cfg.password)
			}
			return c.rc.Do("AUTH", cfg.password)
		})
	}
	if cfg.db != 0 {
		setup = append(setup, func() (any, error) { return c.rc.Do("SELECT", cfg.db) })
	}
	for _, op := range setup {
		if _, err := c.run(ctx, deadline, op); err != nil {
			c.close()
			return nil, err
		}
	}
	return c, nil
}
