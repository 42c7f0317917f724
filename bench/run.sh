#!/usr/bin/env bash
# Runs the client comparison benchmarks against a real redis-server and
# prints the markdown table and benchstat's comparison. Raw output is kept
# in bench/results/ (gitignored). Called by `make bench`.
#
# Environment:
#   BENCH_ROUNDS        rounds of the throughput suite (default 16)
#   BENCH_TIME          -benchtime per benchmark per round (default 500ms)
#   BENCH_HEALTH_COUNT  -count of the health-checker benchmark (default 3)
#   BENCH_PIPELINE_CONNS  shared connections of redisalive-auto (default: the
#                       library's DefaultPipelineConns)
#   BENCH_CEILING_ROUNDS  rounds of redis-benchmark's ceiling (ceiling.sh,
#                       default 3)
#   BENCH_PIN=1         pin redis-server to the last CPU and the clients to
#                       the others, so they never share a core: throughput
#                       is then bound by the client's own CPU cost
#
# The throughput suite runs BENCH_ROUNDS times with -count 1 instead of
# once with -count N: the N samples of a cell are then spread over the
# whole run rather than taken back to back, so drift on a shared 2-core
# machine (redis-server competes with the clients for the same cores)
# lands on every client alike instead of on whichever ran during it. The
# health-checker benchmark counts PINGs over fixed 3 s windows, which
# needs no repetition for precision, so it runs once, after the rounds.
# With the defaults the whole run takes under 10 minutes.
set -euo pipefail
cd "$(dirname "$0")"
bin=results/bench.test

rounds=${BENCH_ROUNDS:-16}
benchtime=${BENCH_TIME:-500ms}
health_count=${BENCH_HEALTH_COUNT:-3}
ncpu=$(nproc)

run=("$bin")
if [ "${BENCH_PIN:-0}" = 1 ]; then
	if [ "$ncpu" -lt 2 ]; then
		echo "run.sh: BENCH_PIN=1 needs at least 2 CPUs" >&2
		exit 1
	fi
	export REDISALIVE_BENCH_SERVER_CPU=$((ncpu - 1))
	run=(taskset -c "0-$((ncpu - 2))" "$bin")
fi

if ! command -v redis-server >/dev/null; then
	if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
		echo "run.sh: installing redis-server" >&2
		apt-get update -qq
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null
	else
		echo "run.sh: redis-server is not installed and this is not a root apt system; install it first" >&2
		exit 1
	fi
fi

mkdir -p results
stamp=$(date -u +%Y%m%dT%H%M%SZ)
raw=results/bench-$stamp.txt
go test -c -o "$bin" .

# Fail rather than skip if redis-server cannot be started.
export REDISALIVE_REQUIRE_SERVER=1
{
	echo "# redis-server: $(redis-server --version)"
	echo "# go: $(go version)"
	echo "# rounds=$rounds benchtime=$benchtime health_count=$health_count nproc=$ncpu pin=${BENCH_PIN:-0}"
	# Other processes on the machine add noise; the load average shows it.
	echo "# loadavg at start: $(cat /proc/loadavg)"
} >"$raw"
for i in $(seq "$rounds"); do
	echo "run.sh: round $i/$rounds" >&2
	BENCH_ROUND=$i "${run[@]}" -test.run '^$' -test.bench . -test.skip '^BenchmarkHealthCheck$' -test.benchmem \
		-test.count 1 -test.benchtime "$benchtime" -test.timeout 30m >>"$raw"
done
echo "run.sh: health checker" >&2
"${run[@]}" -test.run '^$' -test.bench '^BenchmarkHealthCheck$' -test.count "$health_count" \
	-test.timeout 30m >>"$raw"
echo "# loadavg at end: $(cat /proc/loadavg)" >>"$raw"
ln -sf "$(basename "$raw")" results/latest.txt
echo "run.sh: raw results in bench/$raw" >&2

echo
go run ./cmd/benchtable "$raw"

# benchstat compares every client against raw redigo, cell by cell, with
# confidence intervals and p-values. It is fetched through the Go module
# proxy; without network access the table above still stands.
echo '```'
if ! go run golang.org/x/perf/cmd/benchstat@latest \
	-col '/client@(redigo redisalive-Do redisalive-auto redisalive-Get go-redis rueidis redisalive)' "$raw"; then
	echo "run.sh: benchstat unavailable; skipped" >&2
fi
echo '```'

# What Redis's own C client reaches with as many commands in flight as the
# goroutines above: a ceiling for any client at that concurrency.
echo
echo "redis-benchmark with 16 and 64 commands in flight (ceiling.sh):"
echo
./ceiling.sh
