#!/usr/bin/env python3
"""The metadata server's memory under a key-heavy fill, and after the job is deregistered.

Starts `pocket metadata` on its own (a free loopback port, its own cluster token), registers one job, fills it with
0-byte objects with long keys from several threads until the server refuses with QuotaExceeded (its object-memory
bound, --max-object-memory), prints its RSS, deregisters the job and prints the RSS again as it settles. Repeats the
fill (--rounds) to show the memory is reused, not grown. This is the reproduced failure "0-byte objects with 1,000-byte
keys took the metadata server to 2 GiB" with the bound in place.

With --inline N it measures inline bytes instead: each round puts N objects of --size bytes (64 KiB by default) through
the metadata server in one round trip each (the client's inline threshold raised to the size), prints the RSS, deletes
them and prints the RSS as it settles, then deregisters the job and does the same.

usage: bench/metadata-memory.py [--bound 512MiB] [--key-length 1000] [--threads 8] [--rounds 2] [--settle 10]
       bench/metadata-memory.py --inline 2000 [--size 65536] [--bound SIZE] [--rounds 2] [--settle 10]
       --pocket "dotnet BUILD_DIR/pocket.dll" runs the server of another build (default: ./pocket)
"""

import argparse
import os
import secrets
import shlex
import subprocess
import sys
import tempfile
import threading
import time

here = os.path.dirname(os.path.abspath(__file__))
root = os.path.dirname(here)
sys.path.insert(0, os.path.join(root, "clients", "python"))

import pocket  # noqa: E402
from pocket import _wire as w  # noqa: E402

READY = "POCKET-METADATA address="


def rss_mib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def load():
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def register(client, cluster_token, name):
    body, _ = client._meta_call(w.REGISTER_JOB, 0, w.token_bytes(cluster_token), (w.s(name),))
    n = int.from_bytes(body[0:2], "little")
    return bytes(body[2:2 + n]).decode(), bytes(body[2 + n:2 + n + 16]).hex()


def deregister(client, cluster_token, job_id):
    body, _ = client._meta_call(w.DEREGISTER_JOB, 0, w.token_bytes(cluster_token), (w.s(job_id),))
    r = w.Reader(body)
    return r.i64(), r.i64()


def fill(job, key_length, threads):
    """Puts 0-byte objects until QuotaExceeded; returns (objects, seconds, the refusal's message)."""
    stored = [0] * threads
    refusal = []
    stop = threading.Event()

    def worker(t):
        prefix = ("t%02d-" % t).ljust(key_length - 9, "k")
        i = 0
        while not stop.is_set():
            try:
                job.put("%s-%08d" % (prefix, i), b"")
            except pocket.QuotaExceeded as e:
                refusal.append(str(e))
                stop.set()
                return
            i += 1
            stored[t] = i

    started = time.monotonic()
    workers = [threading.Thread(target=worker, args=(t,)) for t in range(threads)]
    for t in workers:
        t.start()
    for t in workers:
        t.join()
    return sum(stored), time.monotonic() - started, refusal[0] if refusal else ""


def settle(pid, seconds):
    """The RSS now and after `seconds` (MiB)."""
    first = rss_mib(pid)
    time.sleep(seconds)
    return first, rss_mib(pid)


def fill_round(pid, admin, token, address, round_, args):
    """Fills a job with 0-byte objects until the server refuses, deregisters it; prints the RSS at each step."""
    job_id, job_token = register(admin, token, "fill")
    client = pocket.Client(address)
    job = pocket.Job(client, job_id, job_token, owns_client=True)
    objects, seconds, refusal = fill(job, args.key_length, args.threads)
    print("round %d: %d objects in %.1f s (%.0f/s), refused: %s" % (round_, objects, seconds, objects / seconds, refusal))
    print("round %d: filled: RSS %.0f MiB; load %s" % (round_, rss_mib(pid), load()))
    job.close()
    freed, _ = deregister(admin, token, job_id)
    samples = []
    for s in range(args.settle + 1):
        samples.append(rss_mib(pid))
        if s < args.settle:
            time.sleep(1)
    print("round %d: deregistered (%d objects freed): RSS %.0f MiB at once, %.0f MiB after %d s; load %s"
          % (round_, freed, samples[0], samples[-1], args.settle, load()))


def inline_round(address, pid, admin, token, round_, count, size, settle_seconds):
    """Puts `count` objects of `size` bytes inline, deletes them, deregisters the job; prints the RSS at each step."""
    job_id, job_token = register(admin, token, "inline")
    client = pocket.Client(address, small_object_threshold=size)
    job = pocket.Job(client, job_id, job_token, owns_client=True)
    data = os.urandom(size)
    started = time.monotonic()
    for i in range(count):
        job.put("o/%06d" % i, data)
    seconds = time.monotonic() - started
    usage = job.usage()
    print("round %d: %d objects of %d bytes in %.1f s (%d inline bytes, %d in node blocks); RSS %.0f MiB; load %s"
          % (round_, count, size, seconds, usage.inline_bytes, usage.block_bytes, rss_mib(pid), load()))
    deleted = job.delete("o/", recursive=True)
    at_once, later = settle(pid, settle_seconds)
    print("round %d: deleted %s: RSS %.0f MiB at once, %.0f MiB after %d s" % (round_, deleted, at_once, later, settle_seconds))
    job.close()
    deregister(admin, token, job_id)
    at_once, later = settle(pid, settle_seconds)
    print("round %d: deregistered: RSS %.0f MiB at once, %.0f MiB after %d s; load %s" % (round_, at_once, later, settle_seconds, load()))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bound", default="512MiB", help="the server's --max-object-memory")
    parser.add_argument("--key-length", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--settle", type=int, default=10, help="seconds to watch the RSS after each deregistration")
    parser.add_argument("--inline", type=int, default=0, help="put this many objects inline per round instead of the key fill")
    parser.add_argument("--size", type=int, default=64 << 10, help="bytes of each --inline object (at most 64 KiB)")
    parser.add_argument("--pocket", default=os.path.join(root, "pocket"), help="the command that runs pocket (to compare builds)")
    args = parser.parse_args()

    token = secrets.token_hex(16)
    env = dict(os.environ, POCKET_CLUSTER_TOKEN=token)
    # The server's log (-v) goes to a file: its "memory trimmed" lines say how long each trimming collection paused it.
    log = tempfile.NamedTemporaryFile("w+", prefix="metadata-memory-", suffix=".log")
    server = subprocess.Popen(shlex.split(args.pocket) + ["metadata", "--port", "0", "--max-object-memory", args.bound,
                               "--stop-on-stdin-eof", "-v"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log,
                              text=True, env=env)
    try:
        address = None
        for line in server.stdout:
            if line.startswith(READY):
                address = line[len(READY):].split()[0]
                break
        if address is None:
            sys.exit("the metadata server did not start")
        pid = server.pid
        print("metadata server %s pid %d, --max-object-memory %s, keys of %d bytes, %d threads; load %s"
              % (address, pid, args.bound, args.key_length, args.threads, load()))
        print("idle: RSS %.0f MiB" % rss_mib(pid))
        admin = pocket.Client(address)
        for round_ in range(1, args.rounds + 1):
            if args.inline:
                inline_round(address, pid, admin, token, round_, args.inline, args.size, args.settle)
            else:
                fill_round(pid, admin, token, address, round_, args)
        admin.close()
        log.flush()
        log.seek(0)
        for line in log:
            if "memory trimmed" in line:
                print("server: " + line.strip())
    finally:
        server.stdin.close()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


if __name__ == "__main__":
    main()
