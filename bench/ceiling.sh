#!/usr/bin/env bash
# Measures what redis-benchmark, Redis's own C client, reaches on this
# machine with a given number of commands in flight, in different shapes:
# c connections with P commands pipelined on each, c×P in flight. A Go
# client with N goroutines has at most N commands in flight, so the best
# shape for N is a ceiling for it that no Go-side change can pass; the
# shapes show how far the way the commands are spread matters. Called by
# run.sh; prints a markdown table (medians over BENCH_CEILING_ROUNDS).
#
# Environment:
#   BENCH_CEILING_ROUNDS  rounds per cell (default 3)
#   BENCH_CEILING_N       requests per cell (default 400000)
#   BENCH_PIN=1           redis-server on the last CPU, redis-benchmark on
#                         the others, as run.sh places the Go clients
set -euo pipefail

rounds=${BENCH_CEILING_ROUNDS:-3}
requests=${BENCH_CEILING_N:-400000}
# in-flight:connections:pipeline
shapes=(16:16:1 16:8:2 16:4:4 16:2:8 16:1:16 64:64:1 64:8:8 64:4:16 64:1:64)

for tool in redis-server redis-benchmark redis-cli; do
	if ! command -v "$tool" >/dev/null; then
		echo "ceiling.sh: $tool is not installed" >&2
		exit 1
	fi
done

srv=(redis-server)
cli=(redis-benchmark)
if [ "${BENCH_PIN:-0}" = 1 ]; then
	ncpu=$(nproc)
	if [ "$ncpu" -lt 2 ]; then
		echo "ceiling.sh: BENCH_PIN=1 needs at least 2 CPUs" >&2
		exit 1
	fi
	srv=(taskset -c "$((ncpu - 1))" redis-server)
	cli=(taskset -c "0-$((ncpu - 2))" redis-benchmark)
fi

dir=$(mktemp -d)
server=""
cleanup() {
	if [ -n "$server" ]; then
		kill "$server" 2>/dev/null || true
		wait "$server" 2>/dev/null || true
	fi
	rm -rf "$dir"
}
trap cleanup EXIT

# A free port: try a few, each until the server answers or exits.
port=""
for attempt in 1 2 3 4 5 6 7 8; do
	p=$((20000 + RANDOM % 20000))
	"${srv[@]}" --port "$p" --bind 127.0.0.1 --save '' --appendonly no \
		--dir "$dir" --logfile "$dir/redis.log" &
	server=$!
	for _ in $(seq 50); do
		if redis-cli -p "$p" ping >/dev/null 2>&1; then
			port=$p
			break
		fi
		kill -0 "$server" 2>/dev/null || break
		sleep 0.1
	done
	[ -n "$port" ] && break
	kill "$server" 2>/dev/null || true
	wait "$server" 2>/dev/null || true
	server=""
done
if [ -z "$port" ]; then
	echo "ceiling.sh: could not start redis-server (attempt $attempt); its log:" >&2
	cat "$dir/redis.log" >&2 || true
	exit 1
fi

# rps OP CONNS PIPELINE prints redis-benchmark's requests per second.
rps() {
	"${cli[@]}" -p "$port" -t "$1" -c "$2" -P "$3" -n "$requests" -q 2>/dev/null |
		tr '\r' '\n' | awk '/requests per second/ { v = $2 } END { printf "%d\n", v }'
}

median() { sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }

echo "| in flight | connections × pipeline | GET ops/s | SET ops/s |"
echo "|---:|---|---:|---:|"
for shape in "${shapes[@]}"; do
	IFS=: read -r inflight conns pipe <<<"$shape"
	row="| $inflight | $conns × $pipe"
	for op in get set; do
		v=$(for _ in $(seq "$rounds"); do rps "$op" "$conns" "$pipe"; done | median)
		if [ "$v" -le 0 ]; then
			echo "ceiling.sh: redis-benchmark measured nothing for $op $conns×$pipe" >&2
			exit 1
		fi
		row="$row | $v"
	done
	echo "$row |"
done
