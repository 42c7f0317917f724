package redisalive

import (
	"cmp"
	"crypto/tls"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/url"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"
)

// ParseURL parses a Redis URL into Options:
//
//	redis://[[username]:password@]host[:port][/db][?option=value&...]
//	rediss://...   (the same, over TLS)
//	unix://[[username]:password@]/path/to/socket[?option=value&...]
//	redis+sentinel://[[username]:password@]host[:port][,host[:port]...]/master[/db][?option=value&...]
//	rediss+sentinel://...   (the same, over TLS to the master and the sentinels)
//
// A Sentinel URL lists the sentinels (port 26379 by default; an IPv6 one in
// brackets) and names the master they monitor; it sets Options.Sentinel.
// Its user info is the master's; the sentinels' own, if they need one, go
// in the options sentinel_username and sentinel_password, and
// sentinel_refresh_interval sets SentinelOptions.RefreshInterval.
//
// The port defaults to 6379 and must be from 1 to 65535; db is a database
// number. User info needs its colon even without a user name
// (redis://:secret@host): redis://word@host is rejected, because clients
// disagree on whether word is a user name (go-redis, redis-py) or a
// password (redis-cli). A '/', '?', '#', '@' or '%' in a user name or
// password must be %-escaped. A unix URL has no host: its socket path
// starts at the third slash.
//
// Query options, each at most once: db (not with a database in the path),
// dial_timeout, read_timeout, write_timeout, pool_timeout, idle_timeout,
// max_conn_lifetime, health_check_interval, block_slice, tcp_user_timeout
// (durations as for time.ParseDuration), max_active, max_idle (whole
// numbers). An unknown option is an error, so a typo does not silently
// leave a default in place.
//
// ParseURL checks the values as NewPool does, so NewPool accepts the
// Options it returns. Every error matches ErrInvalidURL and shows the URL
// with its password replaced by "xxxxx"; one for a value NewPool would
// reject also matches ErrInvalidOptions and holds the *OptionError.
func ParseURL(rawURL string) (Options, error) {
	redacted := redactURL(rawURL)
	fail := func(option error, format string, args ...any) (Options, error) {
		return Options{}, &urlError{url: redacted, reason: fmt.Sprintf(format, args...), option: option}
	}
	rawURL, sentinelHosts := cutSentinelHosts(rawURL)
	u, err := url.Parse(rawURL)
	if err != nil {
		// url.Parse quotes what it failed on, which can be the password;
		// the redacted URL shows the same fault unless the fault is in the
		// user info itself.
		if _, err = url.Parse(redacted); err == nil {
			return fail(nil, `malformed user info: %%-escape any '/', '?', '#', '@' or '%%' in the user name or password`)
		}
		return fail(nil, "%s", errors.Unwrap(err))
	}
	// Past this check the last '@' ends the user info, so the redacted URL
	// hides exactly that, and the reasons below may quote any other part.
	if strings.Contains(u.Opaque+u.EscapedPath()+u.RawQuery+u.EscapedFragment(), "@") {
		return fail(nil, `'@' outside the user info: %%-escape any '/', '?' or '#' in the password, and write an '@' elsewhere as %%40`)
	}
	if u.Fragment != "" {
		return fail(nil, "a fragment (#...) has no meaning in a Redis URL")
	}
	var o Options
	// from names the part of the URL that set each Options field, for a
	// value NewPool rejects; a field without one has a self-explaining
	// reason.
	from := map[string]string{}
	if u.User != nil {
		password, ok := u.User.Password()
		if !ok {
			return fail(nil, "user info without a colon could be a user name or a password: write :password@ for a password alone, user:password@ for both")
		}
		o.Username, o.Password = u.User.Username(), password
		from["Password"] = "user info"
	}
	switch u.Scheme {
	case "redis", "rediss":
		host, port := u.Hostname(), cmp.Or(u.Port(), "6379")
		switch {
		case host == "":
			return fail(nil, "missing host, as in redis://localhost:6379")
		case strings.Contains(host, ":") && !strings.HasPrefix(u.Host, "["):
			return fail(nil, "host and port %q are ambiguous: an IPv6 address goes in brackets, as in redis://[::1]:6379", u.Host)
		}
		// url.Parse takes any raw byte in an IPv6 zone but refuses most of
		// them %-escaped, so such a zone could not be written back as a
		// URL; an interface name or index never needs one.
		if _, zone, ok := strings.Cut(host, "%"); ok && strings.HasPrefix(u.Host, "[") && strings.ContainsFunc(zone, func(r rune) bool { return r <= ' ' || r > '~' }) {
			return fail(nil, "IPv6 zone %q is not an interface name or index, as in redis://[fe80::1%%25eth0]:6379", zone)
		}
		o.Network, o.Addr = "tcp", net.JoinHostPort(host, port)
		if u.Scheme == "rediss" {
			o.TLSConfig = &tls.Config{ServerName: host, MinVersion: tls.VersionTLS12}
		}
		if p := strings.TrimPrefix(u.Path, "/"); p != "" {
			// Digits only, in the range of an int: no sign, no slash.
			n, err := strconv.ParseUint(p, 10, strconv.IntSize-1)
			if err != nil {
				return fail(nil, "path %q is not a database number such as /0 or /2", u.Path)
			}
			o.DB = int(n)
			from["DB"] = fmt.Sprintf("path %q", u.Path)
		}
	case sentinelScheme, sentinelTLSScheme:
		addrs, reason := parseSentinelHosts(sentinelHosts)
		if reason != "" {
			return fail(nil, "%s", reason)
		}
		name, db, hasDB := strings.Cut(strings.TrimPrefix(u.Path, "/"), "/")
		if name == "" {
			return fail(nil, "missing master name, as in redis+sentinel://localhost:26379/mymaster")
		}
		o.Network, o.Sentinel = "tcp", &SentinelOptions{MasterName: name, Addrs: addrs}
		if u.Scheme == sentinelTLSScheme {
			o.TLSConfig = &tls.Config{MinVersion: tls.VersionTLS12}
			o.Sentinel.TLSConfig = &tls.Config{MinVersion: tls.VersionTLS12}
		}
		if hasDB {
			n, err := strconv.ParseUint(db, 10, strconv.IntSize-1)
			if err != nil {
				return fail(nil, "path %q is not a master name and a database number, as in /mymaster/2", u.Path)
			}
			o.DB = int(n)
			from["DB"] = fmt.Sprintf("path %q", u.Path)
		}
	case "unix":
		switch {
		case u.Host != "":
			return fail(nil, "host %q in a unix URL: the socket path starts at the third slash, as in unix:///run/redis.sock", u.Host)
		case u.Path == "":
			return fail(nil, "missing socket path, as in unix:///run/redis.sock")
		case strings.HasSuffix(u.Path, "/"):
			return fail(nil, "socket path %q names a directory", u.Path)
		}
		o.Network, o.Addr = "unix", u.Path
	default:
		return fail(nil, "scheme %q, want redis, rediss, unix, redis+sentinel or rediss+sentinel", u.Scheme)
	}
	query, err := url.ParseQuery(u.RawQuery)
	if err != nil {
		return fail(nil, "malformed query: %v", err)
	}
	for _, key := range slices.Sorted(maps.Keys(query)) {
		vals, field := query[key], urlOptions[key]
		switch {
		case field == "":
			return fail(nil, "unknown option %q (known: %s)", key, strings.Join(slices.Sorted(maps.Keys(urlOptions)), ", "))
		case len(vals) > 1:
			return fail(nil, "option %s given %d times", key, len(vals))
		case from[field] != "":
			return fail(nil, "%s is given twice: %s and option %s=%q", field, from[field], key, vals[0])
		}
		from[field] = fmt.Sprintf("option %s=%q", key, vals[0])
		if reason := setOption(&o, field, vals[0]); reason != "" {
			return fail(nil, "%s %s", from[field], reason)
		}
	}
	if _, err := newConfig(o); err != nil {
		reason := err.Error()
		if oe := (*OptionError)(nil); errors.As(err, &oe) {
			reason = oe.Reason
			if part := from[oe.Field]; part != "" {
				reason = part + ": " + reason
			}
		}
		return fail(err, "%s", reason)
	}
	return o, nil
}

// urlOptions maps each query option of a Redis URL to the Options field it
// sets; the field's type says how its value is parsed.
var urlOptions = map[string]string{
	"db":                    "DB",
	"dial_timeout":          "DialTimeout",
	"read_timeout":          "ReadTimeout",
	"write_timeout":         "WriteTimeout",
	"pool_timeout":          "PoolTimeout",
	"idle_timeout":          "IdleTimeout",
	"max_conn_lifetime":     "MaxConnLifetime",
	"health_check_interval": "HealthCheckInterval",
	"block_slice":           "BlockSlice",
	"tcp_user_timeout":      "TCPUserTimeout",
	"max_active":            "MaxActive",
	"max_idle":              "MaxIdle",

	"sentinel_username":         "Sentinel.Username",
	"sentinel_password":         "Sentinel.Password",
	"sentinel_refresh_interval": "Sentinel.RefreshInterval",
}

// setOption parses val into the named field of o and says what is wrong
// with it, if anything; NewPool's checks come later.
func setOption(o *Options, field, val string) (reason string) {
	v := reflect.ValueOf(o).Elem()
	if sub, ok := strings.CutPrefix(field, "Sentinel."); ok {
		if o.Sentinel == nil {
			return "applies only to a redis+sentinel URL"
		}
		v, field = reflect.ValueOf(o.Sentinel).Elem(), sub
	}
	switch p := v.FieldByName(field).Addr().Interface().(type) {
	case *string:
		*p = val
	case *time.Duration:
		d, err := time.ParseDuration(val)
		if err != nil {
			return "is not a duration such as 250ms or 3s"
		}
		*p = d
	case *int:
		n, err := strconv.Atoi(val)
		if err != nil {
			return "is not a whole number"
		}
		*p = n
	}
	return ""
}

// redactURL hides the password in a Redis URL for error messages, keeping
// a user name. It works on the string, because a URL that fails to parse
// can still hold a password, and it hides everything up to the last '@',
// because a '/', '?' or '#' left unescaped in a password ends the user
// info early for url.Parse. User info without a colon is hidden whole:
// redis-cli reads it as a password.
func redactURL(raw string) string {
	at := strings.LastIndex(raw, "@")
	if at < 0 {
		return raw
	}
	start := 0
	if i := strings.Index(raw, "://"); i >= 0 && i < at {
		start = i + len("://")
	}
	user, _, hasColon := strings.Cut(raw[start:at], ":")
	if hasColon && !strings.ContainsAny(user, "/?#") {
		return raw[:start] + user + ":xxxxx" + raw[at:]
	}
	return raw[:start] + "xxxxx" + raw[at:]
}

// The schemes of a Sentinel URL, without and with TLS.
const (
	sentinelScheme    = "redis+sentinel"
	sentinelTLSScheme = "rediss+sentinel"
)

// defaultSentinelPort is where a sentinel listens unless the URL says.
const defaultSentinelPort = "26379"

// sentinelHostsPlaceholder stands for a Sentinel URL's hosts while
// url.Parse reads the rest: it takes no list of hosts, and an IPv6 one
// followed by another breaks it.
const sentinelHostsPlaceholder = "sentinels"

// cutSentinelHosts takes the hosts out of a Sentinel URL, for
// parseSentinelHosts, and returns the URL with a placeholder in their stead;
// any other URL comes back as it is.
func cutSentinelHosts(raw string) (rest, hosts string) {
	scheme, after, ok := strings.Cut(raw, "://")
	if !ok || scheme != sentinelScheme && scheme != sentinelTLSScheme {
		return raw, ""
	}
	authority, tail := after, ""
	if i := strings.IndexAny(after, "/?#"); i >= 0 {
		authority, tail = after[:i], after[i:]
	}
	user := ""
	if at := strings.LastIndex(authority, "@"); at >= 0 {
		user, authority = authority[:at+1], authority[at+1:]
	}
	return scheme + "://" + user + sentinelHostsPlaceholder + tail, authority
}

// parseSentinelHosts reads "host[:port],..." into sentinel addresses, the
// port 26379 by default; it says what is wrong if it cannot.
func parseSentinelHosts(hosts string) (addrs []string, reason string) {
	if hosts == "" {
		return nil, "missing sentinels, as in redis+sentinel://host1:26379,host2:26379/mymaster"
	}
	for h := range strings.SplitSeq(hosts, ",") {
		host, port := h, defaultSentinelPort
		if strings.HasPrefix(h, "[") {
			end := strings.Index(h, "]")
			if end < 0 {
				return nil, fmt.Sprintf("sentinel %q: an IPv6 address lacks its closing bracket", h)
			}
			host = h[1:end]
			if rest := h[end+1:]; rest != "" {
				p, ok := strings.CutPrefix(rest, ":")
				if !ok {
					return nil, fmt.Sprintf("sentinel %q: want [IPv6]:port", h)
				}
				port = p
			}
		} else if i := strings.LastIndex(h, ":"); i >= 0 {
			if strings.Count(h, ":") > 1 {
				return nil, fmt.Sprintf("sentinel %q is ambiguous: an IPv6 address goes in brackets, as in [::1]:26379", h)
			}
			host, port = h[:i], h[i+1:]
		}
		host, err := url.PathUnescape(host) // a zone: [fe80::1%25eth0]
		switch {
		case err != nil || strings.ContainsFunc(host, func(r rune) bool { return r <= ' ' || r > '~' }):
			return nil, fmt.Sprintf("sentinel %q: malformed host", h)
		case host == "":
			return nil, fmt.Sprintf("sentinel %q: missing host", h)
		}
		if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
			return nil, fmt.Sprintf("sentinel %q: port %q is not from 1 to 65535", h, port)
		}
		addrs = append(addrs, net.JoinHostPort(host, port))
	}
	return addrs, ""
}
