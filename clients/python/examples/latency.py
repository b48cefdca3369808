#!/usr/bin/env python3
"""The original Pocket microbenchmark (microbenchmark/latency.py), on this client, side by side with redis-py.

One process, sequential requests: N x put_buffer, N x get_buffer, N x lookup of 1 KiB objects through
pocket.compat (the original's API), then the same loop through redis-py (SET, GET, EXISTS) against Redis.
The systems take turns for --rounds rounds (the machine drifts; interleaving keeps the comparison fair), and
every request is timed: mean latency (us), Gb/s as the original printed them, p50 and p99, and the Pocket/Redis
ratio of the p50s.

    python3 latency.py                              # the cluster `pocket up` runs; Redis at 127.0.0.1:6379
    python3 latency.py --iterations 50000 --rounds 3 --redis 127.0.0.1:6390
    python3 latency.py --no-redis                   # Pocket only

redis-py is not in the standard library: on Debian use the system interpreter with python3-redis
(`apt-get install python3-redis`; `/usr/bin/python3 latency.py`).
"""

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from pocket import compat  # noqa: E402


def percentile(sorted_values, q):
    if not sorted_values:
        return float("nan")
    i = min(len(sorted_values) - 1, max(0, int(round(q * (len(sorted_values) - 1)))))
    return sorted_values[i]


class Stats:
    def __init__(self):
        self.samples = []
        self.seconds = 0.0

    def add(self, samples, seconds):
        self.samples.extend(samples)
        self.seconds += seconds

    def line(self, name, size):
        s = sorted(self.samples)
        n = len(s)
        mean_us = self.seconds / n * 1e6
        gbps = n * size * 8 / self.seconds / 1e9
        return ("%-22s %8d  mean %8.1f us  %6.3f Gb/s  p50 %8.1f us  p99 %8.1f us"
                % (name, n, mean_us, gbps, percentile(s, 0.50) * 1e6, percentile(s, 0.99) * 1e6))

    @property
    def p50(self):
        return percentile(sorted(self.samples), 0.50)


def timed(n, op):
    samples = [0.0] * n
    clock = time.perf_counter
    t0 = clock()
    for i in range(n):
        a = clock()
        op(i)
        samples[i] = clock() - a
    return samples, clock() - t0


def pocket_round(p, jobid, n, size, round_no, stats):
    text = os.urandom(size)
    back = bytearray(size)
    names = ["tmp-%d-%d" % (round_no, i) for i in range(n)]

    def put(i):
        if compat.put_buffer(p, text, size, names[i], jobid) != 0:
            raise RuntimeError("put buffer failed: " + names[i])

    def get(i):
        if compat.get_buffer(p, names[i], back, size, jobid) != 0:
            raise RuntimeError("get buffer failed: " + names[i])

    def lookup(i):
        if compat.lookup(p, names[i], jobid) != 0:
            raise RuntimeError("lookup failed: " + names[i])

    stats["put_buffer"].add(*timed(n, put))
    stats["get_buffer"].add(*timed(n, get))
    stats["lookup"].add(*timed(n, lookup))
    if back != text:
        raise RuntimeError("get_buffer returned other bytes")


def redis_round(r, n, size, round_no, stats):
    text = os.urandom(size)
    names = [("tmp-%d-%d" % (round_no, i)).encode() for i in range(n)]
    got = [None]

    def put(i):
        r.set(names[i], text)

    def get(i):
        got[0] = r.get(names[i])

    def lookup(i):
        if not r.exists(names[i]):
            raise RuntimeError("exists failed")

    stats["set"].add(*timed(n, put))
    stats["get"].add(*timed(n, get))
    stats["exists"].add(*timed(n, lookup))
    if got[0] != text:
        raise RuntimeError("redis get returned other bytes")
    r.delete(*names)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--iterations", type=int, default=50000)
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--rounds", type=int, default=1, help="rounds of Pocket then Redis, interleaved")
    ap.add_argument("--controller", help="controller URL (default: $POCKET_CONTROLLER, else `pocket up`'s)")
    ap.add_argument("--token", help="cluster token (default: $POCKET_CLUSTER_TOKEN, else `pocket up`'s)")
    ap.add_argument("--redis", default="127.0.0.1:6379", help="Redis host:port")
    ap.add_argument("--no-redis", action="store_true")
    args = ap.parse_args()

    if args.controller:
        os.environ["POCKET_CONTROLLER"] = args.controller
    if args.token:
        os.environ["POCKET_CLUSTER_TOKEN"] = args.token
    r = None
    if not args.no_redis:
        try:
            import redis
        except ImportError:
            sys.exit("redis-py is missing: on Debian `apt-get install python3-redis` and run with /usr/bin/python3, "
                     "or pass --no-redis")
        host, port = args.redis.rsplit(":", 1)
        r = redis.Redis(host=host, port=int(port))
        r.ping()

    jobid = compat.register_job("latency-test", 1, 0, 0, 1)
    if jobid is None:
        sys.exit("could not register a job: %s" % compat.last_error)
    metadata = compat._jobs[jobid][1]
    host, port = metadata.rsplit(":", 1)
    p = compat.connect(host, int(port))
    stats = {k: Stats() for k in ("put_buffer", "get_buffer", "lookup", "set", "get", "exists")}
    try:
        for round_no in range(args.rounds):
            pocket_round(p, jobid, args.iterations, args.size, round_no, stats)
            if r is not None:
                redis_round(r, args.iterations, args.size, round_no, stats)
    finally:
        compat.close(p)
        compat.deregister_job(jobid)

    print("python %s (%s), %d x %d rounds of %d-byte objects, sequential, one process"
          % (sys.version.split()[0], sys.executable, args.rounds, args.iterations, args.size))
    print("load: %s" % " ".join("%.2f" % x for x in os.getloadavg()))
    print("Pocket (pocket.compat):")
    for name in ("put_buffer", "get_buffer", "lookup"):
        print("  " + stats[name].line(name, args.size))
    if r is not None:
        print("Redis (redis-py %s):" % redis.__version__)
        for name in ("set", "get", "exists"):
            print("  " + stats[name].line(name, args.size))
        print("p50 ratio Pocket/Redis: put %.2f, get %.2f, lookup %.2f"
              % (stats["put_buffer"].p50 / stats["set"].p50, stats["get_buffer"].p50 / stats["get"].p50,
                 stats["lookup"].p50 / stats["exists"].p50))


if __name__ == "__main__":
    main()
