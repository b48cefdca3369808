#!/usr/bin/env python3
"""One Python process moves one large object each way: put from memory, get (a new buffer per call) and get_into
a preallocated buffer, and put/get through a file with bounded memory. Prints GB/s per pass and the process's
peak memory. Pass 0 is the process's first transfer of each kind (cold: fresh buffers and connections).

    python3 throughput.py --size 1GiB --repeat 3
    python3 throughput.py --size 2GiB --file-only --dir /tmp     # memory stays bounded: watch max RSS

Needs a job with room: the cluster `pocket up` runs ($POCKET_CONTROLLER, $POCKET_CLUSTER_TOKEN), e.g.
`pocket up --nodes 2 --capacity 2GiB`.
"""

import argparse
import hashlib
import mmap
import os
import resource
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import pocket  # noqa: E402

UNITS = {"": 1, "b": 1, "kib": 1 << 10, "mib": 1 << 20, "gib": 1 << 30, "kb": 1000, "mb": 10 ** 6, "gb": 10 ** 9}


def size_of(text):
    t = text.strip().lower()
    digits = t.rstrip("abcdefghijklmnopqrstuvwxyz")
    return int(float(digits) * UNITS[t[len(digits):]])


def buffer_of(n):
    """A page-aligned private anonymous buffer on transparent huge pages where the system allows them. (A shared
    one, mmap's default, is shmem, which takes no huge pages unless shmem_enabled says so; then the kernel's first
    write into each 4 KiB page costs again even after the buffer was touched.)"""
    m = mmap.mmap(-1, max(n, 1), flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    if hasattr(mmap, "MADV_HUGEPAGE"):
        m.madvise(mmap.MADV_HUGEPAGE)
    return m


def max_rss_mib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", default="1GiB")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--controller")
    ap.add_argument("--token")
    ap.add_argument("--file-only", action="store_true", help="only the file passes (bounded memory)")
    ap.add_argument("--dir", default=None, help="directory for the file passes (default: the temp dir)")
    args = ap.parse_args()
    n = size_of(args.size)
    controller = pocket.Controller(args.controller, args.token)
    job = controller.register_job("throughput", capacity=n, latency_sensitive=True)
    print("python %s, object %d bytes, job %s (%s, %d nodes), load %s"
          % (sys.version.split()[0], n, job.id, job.tier, len(job.registration.get("nodes", [])),
             " ".join("%.2f" % x for x in os.getloadavg())))
    try:
        if not args.file_only:
            data = buffer_of(n)
            for i in range(0, n, 1 << 20):
                data[i:i + 8] = i.to_bytes(8, "little")
            want = hashlib.sha256(data).hexdigest()
            back = buffer_of(n)
            back[:] = data  # fault every page in before timing
            for r in range(args.repeat):
                t = time.perf_counter()
                job.put("mem-%d" % r, data)
                put_s = time.perf_counter() - t
                t = time.perf_counter()
                fresh = job.get("mem-%d" % r)
                new_s = time.perf_counter() - t
                ok = len(fresh) == n and hashlib.sha256(fresh).hexdigest() == want
                del fresh
                t = time.perf_counter()
                got = job.get_into("mem-%d" % r, back)
                get_s = time.perf_counter() - t
                ok = ok and got == n and hashlib.sha256(back).hexdigest() == want
                print("memory pass %d: put %.2f GB/s, get %.2f GB/s, get_into %.2f GB/s, verified %s"
                      % (r, n / put_s / 1e9, n / new_s / 1e9, n / get_s / 1e9, ok))
                job.delete("mem-%d" % r)
            del data, back
        path = os.path.join(args.dir or os.environ.get("TMPDIR", "/tmp"), "pocket-throughput-%d.bin" % os.getpid())
        out = path + ".out"
        with open(path, "wb") as f:
            chunk = os.urandom(1 << 20)
            for _ in range(n // len(chunk)):
                f.write(chunk)
            f.write(chunk[:n % len(chunk)])
        try:
            for r in range(args.repeat):
                t = time.perf_counter()
                job.put("file-%d" % r, path)
                put_s = time.perf_counter() - t
                t = time.perf_counter()
                job.get_to("file-%d" % r, out)
                get_s = time.perf_counter() - t
                print("file pass %d: put %.2f GB/s, get_to %.2f GB/s, size ok %s, max RSS %.0f MiB"
                      % (r, n / put_s / 1e9, n / get_s / 1e9, os.path.getsize(out) == n, max_rss_mib()))
                job.delete("file-%d" % r)
        finally:
            for p in (path, out):
                if os.path.exists(p):
                    os.remove(p)
    finally:
        job.deregister()
        job.close()


if __name__ == "__main__":
    main()
