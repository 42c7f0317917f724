package redisalive

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/gomodule/redigo/redis"
)

// dialSocket opens the socket for a new connection and gives it the pool's
// keepalive and TCP_USER_TIMEOUT settings before anything is sent on it.
// The socket is dialled here rather than by redigo so that the pool keeps
// the raw net.Conn: the checkout peek needs its file descriptor.
func (cfg *config) dialSocket(ctx context.Context, addr string, deadline time.Time) (net.Conn, error) {
	d := net.Dialer{Deadline: deadline, KeepAlive: -1}
	nc, err := d.DialContext(ctx, cfg.network, addr)
	if err != nil {
		return nil, dialError(addr, "connect", err)
	}
	if tc, ok := nc.(*net.TCPConn); ok {
		if err := cfg.tuneTCP(tc); err != nil {
			nc.Close()
			return nil, dialError(addr, "connect", err)
		}
	}
	if cfg.tls != nil {
		tlsConf := cfg.tls.Clone()
		if tlsConf.ServerName == "" {
			tlsConf.ServerName, _, _ = net.SplitHostPort(addr)
		}
		tc := tls.Client(nc, tlsConf)
		nc.SetDeadline(deadline) // bounds the handshake; every command sets its own
		if err := tc.HandshakeContext(ctx); err != nil {
			nc.Close()
			return nil, dialError(addr, "TLS handshake", err)
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

// connect dials and prepares a new connection: socket options, then the
// handshake, all before deadline. Its error is a *DialError, which also
// matches ctx's error when ctx ended the dial.
func (cfg *config) connect(ctx context.Context, addr string, deadline, now time.Time) (*conn, error) {
	nc, err := cfg.dialSocket(ctx, addr, deadline)
	if err == nil {
		c := newConn(nc, cfg, now)
		c.addr = addr
		if _, err = c.run(ctx, deadline, func() (any, error) { return nil, cfg.handshake(c, addr) }); err == nil {
			return c, nil
		}
		c.close()
	}
	de, ok := err.(*DialError)
	if !ok {
		de = dialError(addr, "handshake", err)
	}
	if ce := ctxErr(ctx); ce != nil {
		de.ctxErr, de.misconfigured = ce, false // cut short: it says nothing of the configuration
	}
	return nil, de
}

// handshake prepares c in one round trip: AUTH and SELECT, which must
// succeed; the names the server knows the connection by, its CLIENT ID and
// its own run_id, which the pool needs to kill the connection on the
// server should it ever abandon it (fence.go); and the server's ROLE, which
// tells a master that was demoted from a replica the pool was pointed at
// (failover.go). A server without them (miniredis, some proxies, an ACL
// without them) answers those with errors: the connection then works, only
// unfenced, and its role unknown.
//
// Its errors are *DialErrors naming the step that failed: a refused AUTH
// or SELECT, or a NOAUTH to any command (a password is required and none
// was sent), is a configuration error, as is a reply that is not RESP.
func (cfg *config) handshake(c *conn, addr string) error {
	var steps []string // the commands that must succeed, in order
	if cfg.password != "" {
		steps = append(steps, "AUTH")
		if cfg.username != "" {
			c.rc.Send("AUTH", cfg.username, cfg.password)
		} else {
			c.rc.Send("AUTH", cfg.password)
		}
	}
	if cfg.db != 0 {
		steps = append(steps, "SELECT")
		c.rc.Send("SELECT", cfg.db)
	}
	required := len(steps)
	c.rc.Send("CLIENT", "ID")
	c.rc.Send("INFO", "server")
	c.rc.Send("ROLE")
	replies, err := redis.Values(c.rc.Do(""))
	if err != nil {
		return dialError(addr, "handshake", err)
	}
	for i, r := range replies {
		refused, ok := r.(redis.Error)
		switch {
		case !ok:
		case i < required:
			return dialError(addr, steps[i], refused)
		case strings.HasPrefix(string(refused), "NOAUTH"):
			return dialError(addr, "AUTH", refused)
		}
	}
	c.clientID, c.runID = -1, ""
	id, isID := replies[required].(int64)
	info, isInfo := replies[required+1].([]byte)
	if isID && isInfo {
		c.clientID, c.runID = id, infoField(info, "run_id")
	}
	c.role = roleOf(replies[required+2])
	return nil
}

// Roles a server reports with ROLE.
const (
	roleMaster   = "master"
	roleReplica  = "slave"
	roleSentinel = "sentinel"
)

// roleOf reads a ROLE reply: "master", "slave", "sentinel", or "" if it is
// not one (an error, say).
func roleOf(reply any) string {
	r, ok := reply.([]any)
	if !ok || len(r) == 0 {
		return ""
	}
	b, _ := r[0].([]byte)
	return string(b)
}

// infoField returns the value of field in an INFO reply, or "".
func infoField(info []byte, field string) string {
	for line := range strings.Lines(string(info)) {
		if v, ok := strings.CutPrefix(line, field+":"); ok {
			return strings.TrimSpace(v)
		}
	}
	return ""
}
