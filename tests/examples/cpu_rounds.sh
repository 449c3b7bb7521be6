#!/usr/bin/env bash
# CPU per query of several builds of the embedded frontend, measured side by
# side (issue 17): every build's frontend is up at once (`frontend serve
# --embed-leaf`, 4 shards of the npm corpus, one index directory shared by
# all), and the measured rounds alternate between them, `SECONDS` each at
# `RATE` q/s with the same Zipf seed for every build in a round and the
# order rotated from round to round. So drift of the shared machine hits
# every build alike, which whole runs of `bench_cpu` minutes apart do not.
# CPU is the frontend process's utime + stime (/proc/PID/stat) over the
# round, divided by the requests sent.
#
# Usage (from the workspace root, after `cargo build --release -p frontend -p loadgen`;
# copy each build's `frontend` binary to a directory of its own):
#   tests/examples/cpu_rounds.sh ROUNDS SECONDS NAME=DIR[@WORKERS] ...
# e.g. tests/examples/cpu_rounds.sh 8 10 before=/tmp/before after=target/release
# `@WORKERS` sets TOKIO_WORKER_THREADS for that frontend. Environment:
# RATE (300), CORPUS, QUERIES (../shared/corpus/npm-packages.*), INDEX_DIR
# ($TMPDIR/bench-cpu-embedded, built by the first frontend if missing).
# Prints one line per build and round, then each build's median.
set -euo pipefail
rounds=$1
seconds=$2
shift 2
rate=${RATE:-300}
root=$(cd "$(dirname "$0")/../.." && pwd)
corpus=${CORPUS:-$root/../shared/corpus/npm-packages.jsonl.gz}
queries=${QUERIES:-$root/../shared/corpus/npm-packages.queries.txt}
index=${INDEX_DIR:-${TMPDIR:-/tmp}/bench-cpu-embedded}
loadgen=$root/target/release/loadgen
work=$(mktemp -d)
export SEARCH_CLUSTER_TOKEN=${SEARCH_CLUSTER_TOKEN:-cpu-rounds-token}

names=()
declare -A pid port
cleanup() {
  for name in "${names[@]}"; do kill "${pid[$name]}" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

i=0
for spec in "$@"; do
  name=${spec%%=*}
  rest=${spec#*=}
  dir=${rest%@*}
  workers=""
  [[ $rest == *@* ]] && workers=${rest#*@}
  i=$((i + 1))
  base=$((18100 + 10 * i))
  env ${workers:+TOKIO_WORKER_THREADS=$workers} RUST_LOG=warn "$dir/frontend" serve \
    --http "127.0.0.1:$base" --grpc "127.0.0.1:$((base + 1))" --admin-http "127.0.0.1:$((base + 2))" \
    --shards 4 --cache false \
    --embed-leaf -- --shard 0,1,2,3 --shards 4 --corpus "$corpus" --index-dir "$index" \
    >"$work/$name.log" 2>&1 &
  pid[$name]=$!
  port[$name]=$base
  names+=("$name")
  # One at a time: the first may build the index the others reopen.
  until curl -sf "http://127.0.0.1:$base/readyz" >/dev/null; do
    kill -0 "${pid[$name]}" || { cat "$work/$name.log"; exit 1; }
    sleep 0.5
  done
done

send() { # name seconds seed
  "$loadgen" --target "http://127.0.0.1:${port[$1]}" --rate "$rate" --duration "$2s" \
    --queries "$queries" --nocache -q --seed "$3" >/dev/null 2>&1 || true
}
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
hz=$(getconf CLK_TCK)

for name in "${names[@]}"; do send "$name" 5 7; done # warm-up
for round in $(seq 1 "$rounds"); do
  shift_by=$(((round - 1) % ${#names[@]}))
  order=("${names[@]:$shift_by}" "${names[@]:0:$shift_by}")
  for name in "${order[@]}"; do
    before=$(ticks "${pid[$name]}")
    send "$name" "$seconds" $((100 + round))
    after=$(ticks "${pid[$name]}")
    ms=$(awk -v t=$((after - before)) -v hz="$hz" -v n=$((seconds * rate)) \
      'BEGIN { printf "%.3f", t * 1000 / hz / n }')
    echo "round $round $name $ms ms/q"
    echo "$ms" >>"$work/$name.ms"
  done
done
for name in "${names[@]}"; do
  sort -n "$work/$name.ms" | awk -v name="$name" \
    '{ v[NR] = $1 } END { m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2;
       printf "%s: median %.3f ms/q over %d rounds (min %.3f, max %.3f)\n", name, m, NR, v[1], v[NR] }'
done
