#!/bin/bash
# A wrk flood (256 connections, one source address) beside a polite client
# at 20 queries/s from 127.0.0.2, against `frontend demo` (2 shards). Needs
# wrk and curl; run from the workspace root after
# `cargo build --release -p frontend`. Figures in BENCHMARKS.md (issue 18).
set -u
F=${FRONTEND:-target/release/frontend}
OUT=${1:-/tmp/flood}
mkdir -p $OUT; rm -f $OUT/*
$F demo --shards 2 --replicas 1 --caches 0 --http 127.0.0.1:18080 --admin-http 127.0.0.1:19100 --metrics-base 0 > $OUT/demo.log 2>&1 &
DEMO=$!
for i in $(seq 120); do curl -sf -o /dev/null 'http://127.0.0.1:18080/readyz' && break; sleep 0.5; done
# warm
for i in $(seq 50); do curl -s -o /dev/null "http://127.0.0.1:18080/search?q=parser+$((i % 20))&timeout_ms=100"; done
wrk -c 256 -t 2 -d 14s 'http://127.0.0.1:18080/search?q=json+parser&timeout_ms=100' > $OUT/wrk.txt 2>&1 &
WRK=$!
sleep 2
for i in $(seq 200); do
  curl -s -o /dev/null -w '%{http_code} %{time_total}\n' --interface 127.0.0.2 \
    "http://127.0.0.1:18080/search?q=parser+$((i % 20))&timeout_ms=100" >> $OUT/polite.txt &
  sleep 0.05
done
wait $WRK
wait $(jobs -p | grep -v "^$DEMO$") 2>/dev/null
curl -s http://127.0.0.1:19100/metrics | grep -E '^frontend_(admission|requests_total|http_requests)' > $OUT/metrics.txt
kill -INT $DEMO; wait $DEMO
echo "polite 200: $(grep -c '^200' $OUT/polite.txt) / $(wc -l < $OUT/polite.txt)"
awk '$1==200{print $2*1000}' $OUT/polite.txt | sort -n | awk '{a[NR]=$1} END{print "polite ms p50",a[int(NR*0.5)],"p95",a[int(NR*0.95)],"p99",a[int(NR*0.99)],"max",a[NR]}'
awk '{print $1}' $OUT/polite.txt | sort | uniq -c
cat $OUT/wrk.txt
