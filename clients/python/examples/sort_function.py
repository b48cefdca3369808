#!/usr/bin/env python3
"""One map or reduce function of `pocket demo --functions-as python`: a short-lived process, as a FaaS platform
would run it, that opens the job with the token it was handed ($POCKET_JOB_TOKEN), does its one step and prints
its result as one JSON line.

    sort_function.py map    --metadata HOST:PORT --job ID --index I --mappers M --reducers R
    sort_function.py reduce --metadata HOST:PORT --job ID --index R --mappers M --reducers R

The records are those of the demo (100 bytes, the first 10 the key, compared as unsigned bytes): mapper i reads
input/part-i and writes shuffle/i-r for every reducer r, by key range (the first 4 key bytes, big-endian, times R,
shifted right by 32); reducer r reads shuffle/*-r, sorts and writes output/part-r. The driver checks the output.
"""

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import pocket  # noqa: E402

RECORD = 100


def input_key(m):
    return "input/part-%05d" % m


def shuffle_key(m, r):
    return "shuffle/%05d-%05d" % (m, r)


def output_key(r):
    return "output/part-%05d" % r


def records_of(data, key):
    if len(data) % RECORD:
        raise ValueError("'%s' is %d bytes, not a whole number of %d-byte records" % (key, len(data), RECORD))
    return len(data) // RECORD


def map_function(job, mapper, reducers):
    key = input_key(mapper)
    data = job.get(key)
    count = records_of(data, key)
    view = memoryview(data)
    buckets = [bytearray() for _ in range(reducers)]
    from_bytes = int.from_bytes
    for off in range(0, count * RECORD, RECORD):
        b = (from_bytes(view[off:off + 4], "big") * reducers) >> 32
        buckets[b] += view[off:off + RECORD]
    # Every reducer gets an object, empty or not, so it never has to tell "empty" from "not written yet".
    for r, bucket in enumerate(buckets):
        job.put(shuffle_key(mapper, r), bucket)
    return count, len(data), len(data)


def reduce_function(job, reducer, mappers):
    records = []
    total = 0
    for m in range(mappers):
        key = shuffle_key(m, reducer)
        part = job.get(key)
        n = records_of(part, key)
        total += len(part)
        view = memoryview(part)
        records.extend(view[i * RECORD:(i + 1) * RECORD].tobytes() for i in range(n))
    # Whole records compare as their keys first (bytes compare unsigned), so a plain sort orders the keys.
    records.sort()
    out = b"".join(records)
    job.put(output_key(reducer), out)
    return len(records), total, len(out)


def main():
    ap = argparse.ArgumentParser(description="One function of the Pocket sort demo")
    ap.add_argument("function", choices=("map", "reduce"))
    ap.add_argument("--metadata", required=True)
    ap.add_argument("--job", required=True)
    ap.add_argument("--index", type=int, required=True)
    ap.add_argument("--mappers", type=int, required=True)
    ap.add_argument("--reducers", type=int, required=True)
    args = ap.parse_args()
    start = time.perf_counter()
    try:
        with pocket.Job.open(args.job, metadata=args.metadata) as job:
            if args.function == "map":
                records, read, written = map_function(job, args.index, args.reducers)
            else:
                records, read, written = reduce_function(job, args.index, args.mappers)
    except (pocket.PocketError, ValueError) as e:
        print("%s function %d: %s" % (args.function, args.index, e), file=sys.stderr)
        return 1
    print(json.dumps({"records": records, "bytesRead": read, "bytesWritten": written,
                      "seconds": time.perf_counter() - start}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
