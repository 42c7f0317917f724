#!/bin/sh
# Runs a command in a network namespace of its own whose loopback is one
# bottleneck shared by every connection: tbf at RATE (default 80mbit), MTU
# 1500. Nothing outside the namespace is touched. Needs root (or user
# namespaces), unshare and tc with the tbf qdisc. For example:
#
#   go test -c -o slowlink.test . &&
#   REDISALIVE_REQUIRE_SERVER=1 ./shaped.sh ./slowlink.test -test.run '^$' \
#       -test.bench 'SlowLink/link=direct' -test.benchtime 4s
set -eu
if [ "${SHAPED_INSIDE:-}" != 1 ]; then
	SHAPED_INSIDE=1 exec unshare -n "$0" "$@"
fi
ip link set lo mtu 1500
ip link set lo up
tc qdisc add dev lo root tbf rate "${RATE:-80mbit}" burst 32kb latency 200ms
exec "$@"
