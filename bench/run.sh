#!/usr/bin/env bash
# Runs the client comparison benchmarks against a real redis-server and
# prints the markdown table and benchstat's comparison. Raw output is kept
# in bench/results/ (gitignored). Called by `make bench`.
#
# Environment:
#   BENCH_ROUNDS        rounds of the throughput suite (default 12)
#   BENCH_FILTER        -test.bench regexp of the throughput suite (default
#                       ., everything but the skipped benchmarks below), e.g.
#                       BENCH_FILTER='^BenchmarkContended' BENCH_ROUNDS=8
#                       ./run.sh for the contended cells alone; the health
#                       checker then runs only if the filter's first
#                       /-separated element selects BenchmarkHealthCheck
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
#
# Time: a round is 75 cells (GET and SET at 1/16/64 goroutines with one
# connection each, ContendedGET and ContendedSET at 16/64/256 on default
# pool sizes: 72 cells of 6 clients; BRPop's 2; Stats), each 500 ms of
# benchtime plus go test's ramp-up to it and the pool's dialling: about
# 0.8 s in all as measured on a few cells, so about a minute per round
# with the servers' start and warm-up. 12 rounds are about 12.5 minutes;
# the health checker (about 25 s), ceiling.sh (roughly a minute) and the
# build bring the whole run to about 14 minutes on an otherwise idle
# 2-core machine, more on a loaded one. The default was 16
# rounds before the contended cells doubled the round (that would now be
# about 18.5 minutes); 12 is also a multiple of the 6 clients, so every
# client starts a round equally often.
set -euo pipefail
cd "$(dirname "$0")"
bin=results/bench.test

rounds=${BENCH_ROUNDS:-12}
filter=${BENCH_FILTER:-.}
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
	echo "# rounds=$rounds benchtime=$benchtime health_count=$health_count nproc=$ncpu pin=${BENCH_PIN:-0} filter=$filter"
	# Other processes on the machine add noise; the load average shows it.
	echo "# loadavg at start: $(cat /proc/loadavg)"
} >"$raw"
for i in $(seq "$rounds"); do
	echo "run.sh: round $i/$rounds" >&2
	BENCH_ROUND=$i "${run[@]}" -test.run '^$' -test.bench "$filter" -test.skip '^Benchmark(HealthCheck|SlowLink)$' -test.benchmem \
		-test.count 1 -test.benchtime "$benchtime" -test.timeout 30m >>"$raw"
done
# -test.list matches top-level names only, hence the filter's first
# element; go test's own split of a -test.bench regexp also respects
# brackets, which this approximation does not. grep reads the whole list
# (no -q): exiting early could kill the binary with SIGPIPE, which
# pipefail would take for no match.
if "$bin" -test.list "${filter%%/*}" | grep -x BenchmarkHealthCheck >/dev/null; then
	echo "run.sh: health checker" >&2
	"${run[@]}" -test.run '^$' -test.bench '^BenchmarkHealthCheck$' -test.count "$health_count" \
		-test.timeout 30m >>"$raw"
else
	echo "run.sh: health checker not selected by BENCH_FILTER; skipped" >&2
fi
echo "# loadavg at end: $(cat /proc/loadavg)" >>"$raw"
ln -sf "$(basename "$raw")" results/latest.txt
echo "run.sh: raw results in bench/$raw" >&2

echo
go run ./cmd/benchtable "$raw"

# benchstat compares every client against raw redigo, cell by cell, with
# confidence intervals and p-values. The columns are the clients; every
# other part of a name is a row, so the contended cells (ContendedGET,
# ContendedSET) get rows of their own next to GET and SET, and cpu-ns/op a
# table of its own next to ops/s. It is fetched through the Go module
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
