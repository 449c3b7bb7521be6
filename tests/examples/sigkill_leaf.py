#!/usr/bin/env python3
"""Leases (issue 3) with real processes: `frontend serve` and two `leaf`
processes (2 shards of the npm corpus); SIGKILL the leaf of shard 1 and time
until `/cluster` reports the shard unavailable, then start a new leaf process
and time until `/cluster` routes it and a search answers complete.

    python3 tests/examples/sigkill_leaf.py [--bin target/release] \
        [--corpus ../shared/corpus/npm-packages.jsonl.gz] [--trials 3] [--ttls 1s,3s]
"""

import argparse
import json
import os
import signal
import statistics
import subprocess
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
TOKEN = "sigkill-bench-token"


def get_json(url):
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as error:
        return error.code, json.load(error)
    except OSError:
        return 0, None


def shard_state(http, shard):
    _, body = get_json(f"http://{http}/cluster")
    if not body:
        return None
    for view in body.get("shards", []):
        if view.get("shard") == shard:
            return view.get("state")
    return None


def wait(what, condition, limit=120.0, step=0.005):
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > limit:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(step)
    return time.monotonic() - started


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--bin", default=os.path.join(HERE, "../../target/release"))
    parser.add_argument(
        "--corpus", default=os.path.join(HERE, "../../../shared/corpus/npm-packages.jsonl.gz")
    )
    parser.add_argument("--trials", type=int, default=3)
    parser.add_argument("--ttls", default="1s,3s")
    parser.add_argument("--http", default="127.0.0.1:18080")
    parser.add_argument("--grpc", default="127.0.0.1:17070")
    args = parser.parse_args()
    env = dict(os.environ, SEARCH_CLUSTER_TOKEN=TOKEN, RUST_LOG="warn")
    quiet = dict(stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)

    def leaf(shard, ttl):
        return subprocess.Popen(
            [
                f"{args.bin}/leaf",
                "--corpus", args.corpus,
                "--shard", str(shard),
                "--shards", "2",
                "--frontend", args.grpc,
                "--lease-ttl", ttl,
            ],
            **quiet,
        )

    print("| TTL | trial | SIGKILL → /cluster shard unavailable | start → routed and complete answer |")
    print("|---|---|---|---|")
    for ttl in args.ttls.split(","):
        frontend = subprocess.Popen(
            [
                f"{args.bin}/frontend", "serve",
                "--http", args.http,
                "--grpc", args.grpc,
                "--shards", "2",
                "--lease-ttl-min", "100ms",
            ],
            **quiet,
        )
        leaves = [leaf(0, ttl), leaf(1, ttl)]
        try:
            wait("both shards", lambda: shard_state(args.http, 0) == "ok"
                 and shard_state(args.http, 1) == "ok")
            detect, restart = [], []
            for trial in range(args.trials):
                time.sleep(1.0 + 0.37 * trial)
                leaves[1].send_signal(signal.SIGKILL)
                killed = time.monotonic()
                leaves[1].wait()
                wait("shard 1 unavailable", lambda: shard_state(args.http, 1) == "unavailable")
                detect.append(time.monotonic() - killed)
                started = time.monotonic()
                leaves[1] = leaf(1, ttl)

                def serving():
                    if shard_state(args.http, 1) != "ok":
                        return False
                    status, body = get_json(
                        f"http://{args.http}/search?q=react&nocache=true&timeout_ms=1000"
                    )
                    return status == 200 and body and not body.get("partial", True)

                wait("shard 1 serving", serving)
                restart.append(time.monotonic() - started)
                print(f"| {ttl} | {trial} | {detect[-1] * 1e3:.0f} ms | {restart[-1] * 1e3:.0f} ms |",
                      flush=True)
            print(f"| {ttl} | median | {statistics.median(detect) * 1e3:.0f} ms | "
                  f"{statistics.median(restart) * 1e3:.0f} ms |", flush=True)
        finally:
            for process in leaves + [frontend]:
                process.kill()
                process.wait()


if __name__ == "__main__":
    main()
