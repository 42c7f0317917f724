#!/usr/bin/env bash
# Runs the failover scenarios of BENCHMARKS.md's Failover section
# (TestFailover in failover_test.go) for redisalive, go-redis and rueidis
# and prints their table (cmd/failovertable). Raw output is kept in
# bench/results/ (gitignored). Called by `make bench` after run.sh, and
# alone by `make bench-failover`.
#
# It needs Linux, root, redis-server, unshare, ip, iptables and ss (`make
# deps` installs them): the test re-runs itself in a private network
# namespace, where F3 drops the sentinels' packets to the master with
# iptables, so nothing on the host's network is touched, and every
# redis-server it starts dies with it. Each run has a topology of its own
# in temp dirs the test removes.
#
# Environment:
#   BENCH_FAILOVER_ROUNDS  runs of each scenario per client, interleaved
#                          (default 3)
#   BENCH_FAILOVER_RUN     the -test.run pattern (default ^TestFailover$),
#                          e.g. '^TestFailover$/round=1/F3' for one
#                          scenario of one round
#
# With the defaults the run takes about 7 minutes (F3 holds its split
# brain for 8 s and then waits for the sentinels to demote the old master).
set -euo pipefail
cd "$(dirname "$0")"
bin=results/failover.test

mkdir -p results
stamp=$(date -u +%Y%m%dT%H%M%SZ)
raw=results/failover-$stamp.txt
go test -c -o "$bin" .

# Fail rather than skip without redis-server or the fault network.
export BENCH_FAILOVER=1 REDISALIVE_REQUIRE_SERVER=1 REDISALIVE_REQUIRE_FAULTNET=1
{
	echo "# redis-server: $(redis-server --version 2>/dev/null || echo missing)"
	echo "# go: $(go version)"
	echo "# rounds=${BENCH_FAILOVER_ROUNDS:-3} nproc=$(nproc)"
	echo "# loadavg at start: $(cat /proc/loadavg)"
} >"$raw"
echo "failover.sh: failover scenarios, about 7 minutes; follow them in bench/$raw" >&2
status=0
"$bin" -test.run "${BENCH_FAILOVER_RUN:-^TestFailover\$}" -test.v -test.count 1 \
	-test.timeout 60m >>"$raw" 2>&1 || status=$?
echo "# loadavg at end: $(cat /proc/loadavg)" >>"$raw"
ln -sf "$(basename "$raw")" results/failover-latest.txt
echo "failover.sh: raw results in bench/$raw" >&2
if [ "$status" -ne 0 ]; then
	echo "failover.sh: TestFailover failed (exit status $status); the table has the runs that finished" >&2
fi

echo
if ! go run ./cmd/failovertable "$raw" && [ "$status" -eq 0 ]; then
	status=1
fi
exit "$status"
