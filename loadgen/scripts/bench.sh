#!/usr/bin/env bash
# Side-by-side benchmark of loadgen, wrk and oha on this machine; see the
# "Load generator (issue 8)" section of BENCHMARKS.md.
#
#   loadgen/scripts/bench.sh [RUNS]          # default 3 runs of each case
#
# Needs wrk (apt-get install -y wrk) and oha (cargo install oha --locked).
# The server is pinned to core 1 and each load generator to core 0. Results
# go to $OUT (default /tmp/loadgen-bench) as one line per run in results.tsv.
set -euo pipefail

RUNS=${1:-3}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
OUT=${OUT:-/tmp/loadgen-bench}
PORT=${PORT:-8099}
URL="http://127.0.0.1:$PORT/fast"
BIN="$ROOT/target/release"
LEN=${LEN:-10}
CONNS=${CONNS:-64}
STALL_RATE=${STALL_RATE:-1000}
FIXED_RATE=${FIXED_RATE:-10000}
mkdir -p "$OUT"

cargo build --release -q -p loadgen --bins --examples --manifest-path "$ROOT/Cargo.toml"
command -v wrk >/dev/null && command -v oha >/dev/null

SERVER=""
start_server() {
    taskset -c 1 "$BIN/examples/bench_server" --addr "127.0.0.1:$PORT" "$@" 2>/dev/null &
    SERVER=$!
    for _ in $(seq 50); do
        kill -0 "$SERVER" 2>/dev/null || { echo "bench_server exited (port $PORT in use?)" >&2; return 1; }
        (exec 3<>/dev/tcp/127.0.0.1/$PORT) 2>/dev/null && return 0
        sleep 0.1
    done
    echo "bench_server did not start" >&2
    return 1
}
stop_server() {
    kill "$SERVER" 2>/dev/null || true
    wait "$SERVER" 2>/dev/null || true
}
trap stop_server EXIT
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
HZ=$(getconf CLK_TCK)

# Runs "$@" pinned to core 0 against a fresh server; prints
# "<tool cpu s> <server cpu s> <wall s>" to fd 3 and the tool's output to stdout.
measure() {
    local server_before tool_times
    server_before=$(ticks "$SERVER")
    tool_times=$(mktemp)
    /usr/bin/time -f '%U %S %e' -o "$tool_times" taskset -c 0 "$@"
    local server_after
    server_after=$(ticks "$SERVER")
    read -r user sys wall <"$tool_times"
    rm -f "$tool_times"
    echo "$(echo "$user + $sys" | bc) $(echo "scale=2; ($server_after - $server_before) / $HZ" | bc) $wall" >&3
}

results="$OUT/results.tsv"
echo -e "run\tcase\ttool\tfigure\tvalue\ttool_cpu_s\tserver_cpu_s\twall_s" >"$results"
row() { echo -e "$1\t$2\t$3\t$4\t$5\t$6\t$7\t$8" >>"$results"; }

for run in $(seq "$RUNS"); do
    echo "== run $run of $RUNS; load average $(cut -d' ' -f1-3 /proc/loadavg)" >&2

    # 1. Throughput against the trivial endpoint.
    start_server
    wrk_out=$(measure wrk -t1 -c"$CONNS" -d"${LEN}s" --latency "$URL" 3>"$OUT/cpu")
    read -r cpu scpu wall <"$OUT/cpu"
    rps=$(echo "$wrk_out" | awk '/Requests\/sec/ {print $2}')
    n=$(echo "$wrk_out" | awk '/requests in/ {print $1}')
    row "$run" max-rate wrk requests_per_s "$rps" "$cpu" "$scpu" "$wall"
    row "$run" max-rate wrk cpu_us_per_request "$(echo "scale=2; $cpu * 1000000 / $n" | bc)" "$cpu" "$scpu" "$wall"
    stop_server

    start_server
    measure oha -z "${LEN}s" -c "$CONNS" --no-tui --output-format json "$URL" 3>"$OUT/cpu" >"$OUT/oha-$run.json"
    read -r cpu scpu wall <"$OUT/cpu"
    rps=$(python3 -c "import json,sys; print(round(json.load(open(sys.argv[1]))['summary']['requestsPerSec']))" "$OUT/oha-$run.json")
    n=$(python3 -c "import json,sys; print(sum(json.load(open(sys.argv[1]))['statusCodeDistribution'].values()))" "$OUT/oha-$run.json")
    row "$run" max-rate oha requests_per_s "$rps" "$cpu" "$scpu" "$wall"
    row "$run" max-rate oha cpu_us_per_request "$(echo "scale=2; $cpu * 1000000 / $n" | bc)" "$cpu" "$scpu" "$wall"
    stop_server

    # loadgen is open loop: it is given rates in steps of 3 s, and the highest
    # step it keeps (nothing dropped, at least 99% of the rate sent, p99 send
    # lag at most 10 ms) is its sustained rate.
    start_server
    stages=()
    for r in $(seq 5000 2500 45000); do stages+=(--stage "3s@$r"); done
    measure "$BIN/loadgen" --target "$URL" --query x --quiet --max-in-flight 4096 \
        --report "$OUT/loadgen-rate-$run.json" "${stages[@]}" 3>"$OUT/cpu" >/dev/null || true
    read -r cpu scpu wall <"$OUT/cpu"
    best=$(python3 - "$OUT/loadgen-rate-$run.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
ok = [s["rate"] for s in r["stages"] if s["dropped"] == 0 and s["send_lag_ms"]["p99"] <= 10.0
      and s["achieved_rate"] >= 0.99 * s["rate"]]
print(int(max(ok)) if ok else 0)
PY
)
    n=$(python3 -c "import json,sys; print(sum(s['sent'] for s in json.load(open(sys.argv[1]))['stages']))" "$OUT/loadgen-rate-$run.json")
    row "$run" max-rate loadgen requests_per_s "$best" "$cpu" "$scpu" "$wall"
    row "$run" max-rate loadgen cpu_us_per_request "$(echo "scale=2; $cpu * 1000000 / $n" | bc)" "$cpu" "$scpu" "$wall"
    stop_server

    # 2. CPU per request at one fixed rate, the open-loop tools side by side.
    start_server
    measure oha -z "${LEN}s" -c "$CONNS" -q "$FIXED_RATE" --no-tui --output-format json "$URL" \
        3>"$OUT/cpu" >"$OUT/oha-fixed-$run.json"
    read -r cpu scpu wall <"$OUT/cpu"
    n=$(python3 -c "import json,sys; print(sum(json.load(open(sys.argv[1]))['statusCodeDistribution'].values()))" "$OUT/oha-fixed-$run.json")
    row "$run" "fixed-$FIXED_RATE" "oha -q $FIXED_RATE" cpu_us_per_request "$(echo "scale=2; $cpu * 1000000 / $n" | bc)" "$cpu" "$scpu" "$wall"
    stop_server

    start_server
    measure "$BIN/loadgen" --target "$URL" --query x --quiet --rate "$FIXED_RATE" --duration "${LEN}s" \
        --report "$OUT/loadgen-fixed-$run.json" 3>"$OUT/cpu" >/dev/null || true
    read -r cpu scpu wall <"$OUT/cpu"
    n=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['total']['sent'])" "$OUT/loadgen-fixed-$run.json")
    row "$run" "fixed-$FIXED_RATE" "loadgen --rate $FIXED_RATE" cpu_us_per_request "$(echo "scale=2; $cpu * 1000000 / $n" | bc)" "$cpu" "$scpu" "$wall"
    stop_server

    # 3. p99 reported when the server stalls for 1 s at 5 s of a 10 s run.
    start_server --stall-at 5s --stall-for 1s
    wrk_out=$(measure wrk -t1 -c"$CONNS" -d10s --latency "$URL" 3>"$OUT/cpu")
    read -r cpu scpu wall <"$OUT/cpu"
    p99=$(echo "$wrk_out" | awk '$1 == "99%" {print $2}')
    row "$run" stall wrk p99 "$p99" "$cpu" "$scpu" "$wall"
    stop_server

    start_server --stall-at 5s --stall-for 1s
    measure oha -z 10s -c "$CONNS" --no-tui --output-format json "$URL" 3>"$OUT/cpu" >"$OUT/oha-stall-$run.json"
    read -r cpu scpu wall <"$OUT/cpu"
    p99=$(python3 -c "import json,sys; print(round(json.load(open(sys.argv[1]))['latencyPercentiles']['p99'] * 1000, 2), 'ms')" "$OUT/oha-stall-$run.json")
    row "$run" stall oha p99 "$p99" "$cpu" "$scpu" "$wall"
    stop_server

    start_server --stall-at 5s --stall-for 1s
    measure oha -z 10s -c "$CONNS" -q "$STALL_RATE" --latency-correction --no-tui --output-format json "$URL" \
        3>"$OUT/cpu" >"$OUT/oha-stall-q-$run.json"
    read -r cpu scpu wall <"$OUT/cpu"
    p99=$(python3 -c "import json,sys; print(round(json.load(open(sys.argv[1]))['latencyPercentiles']['p99'] * 1000, 2), 'ms')" "$OUT/oha-stall-q-$run.json")
    row "$run" stall "oha -q $STALL_RATE --latency-correction" p99 "$p99" "$cpu" "$scpu" "$wall"
    stop_server

    start_server --stall-at 5s --stall-for 1s
    measure "$BIN/loadgen" --target "$URL" --query x --quiet --rate "$STALL_RATE" --duration 10s \
        --report "$OUT/loadgen-stall-$run.json" 3>"$OUT/cpu" >/dev/null || true
    read -r cpu scpu wall <"$OUT/cpu"
    p99=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['total']['latency_ms']['p99'], 'ms')" "$OUT/loadgen-stall-$run.json")
    row "$run" stall "loadgen --rate $STALL_RATE" p99 "$p99" "$cpu" "$scpu" "$wall"
    stop_server
done

echo "== done; load average $(cut -d' ' -f1-3 /proc/loadavg)" >&2
column -t -s $'\t' "$results"
