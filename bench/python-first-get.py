#!/usr/bin/env python3
"""Where the first large get of a Python process spends its time: the same object read into buffers of each kind,
first and second time, with the process's user and system CPU; and the machine's own cost of fresh memory and of a
new file, with no network. Uses clients/python of this repository.

    python3 bench/python-first-get.py --size 1GiB          # against the cluster `pocket up` runs

Rows (each buffer is touched by user space before its first get, except `get()`'s own):
  bytearray, mmap shared (mmap's default), mmap private 4 KiB pages, mmap private huge pages: get_into twice;
  get(): the client allocates the result itself, after a pause (fresh memory) and at once after a free (reused memory);
  floor: allocate and touch new huge-page memory, the same two ways; write a new file of the same size.
"""

import argparse
import mmap
import os
import resource
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "clients", "python"))

import pocket  # noqa: E402

UNITS = {"": 1, "kib": 1 << 10, "mib": 1 << 20, "gib": 1 << 30}


def size_of(text):
    t = text.strip().lower()
    digits = t.rstrip("abcdefghijklmnopqrstuvwxyz")
    return int(float(digits) * UNITS[t[len(digits):]])


def cpu():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime, r.ru_stime


def timed(n, label, fn):
    u0, s0 = cpu()
    t = time.perf_counter()
    result = fn()
    d = time.perf_counter() - t
    u1, s1 = cpu()
    print("%-40s %8.3f s %6.2f GB/s   user %.2f s  system %.2f s" % (label, d, n / d / 1e9, u1 - u0, s1 - s0),
          flush=True)
    return result


def private(n, huge):
    m = mmap.mmap(-1, n, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    advice = "MADV_HUGEPAGE" if huge else "MADV_NOHUGEPAGE"
    if hasattr(mmap, advice):
        m.madvise(getattr(mmap, advice))
    return m


def touch(m, n):
    zeros = bytes(1 << 20)
    view = memoryview(m)
    for i in range(0, n, 1 << 20):
        view[i:i + (1 << 20)] = zeros[:min(1 << 20, n - i)]
    view.release()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", default="1GiB")
    ap.add_argument("--controller")
    ap.add_argument("--token")
    ap.add_argument("--dir", default=tempfile.gettempdir(), help="directory of the new-file floor")
    ap.add_argument("--pause", type=float, default=5.0,
                    help="seconds to wait before the fresh-memory rows (long enough for freed memory to leave the process)")
    args = ap.parse_args()
    n = size_of(args.size)
    job = pocket.Controller(args.controller, args.token).register_job("first-get", capacity=n)
    print("python %s, object %d bytes, load %s" % (sys.version.split()[0], n,
                                                   " ".join("%.2f" % x for x in os.getloadavg())))
    try:
        src = private(n, True)
        for i in range(0, n, 1 << 20):
            src[i:i + 8] = i.to_bytes(8, "little")
        job.put("obj", src)
        timed(n, "warm-up get_into (connections, threads)", lambda: job.get_into("obj", src))
        kinds = (("bytearray", lambda: bytearray(n)), ("mmap shared", lambda: mmap.mmap(-1, n)),
                 ("mmap private 4 KiB pages", lambda: private(n, False)),
                 ("mmap private huge pages", lambda: private(n, True)))
        for name, make in kinds:
            buf = make()
            touch(buf, n)
            timed(n, name + ": first get_into", lambda: job.get_into("obj", buf))
            timed(n, name + ": second get_into", lambda: job.get_into("obj", buf))
            if isinstance(buf, mmap.mmap):
                buf.close()
            del buf
        # Memory a process frees goes back to the host after a few seconds on some virtual machines (free page
        # reporting); touching it again then costs as much as memory never used. So each get() and each floor runs
        # twice: after a pause (fresh memory) and at once after a free (memory the process just gave up, reused).
        for label, pause in (("after a %g s pause" % args.pause, args.pause), ("at once after a free", 0)):
            time.sleep(pause)
            got = timed(n, "get(): " + label, lambda: job.get("obj"))  # freed after the timing
            if len(got) != n or got[n - (1 << 20):n - (1 << 20) + 8] != (n - (1 << 20)).to_bytes(8, "little"):
                raise SystemExit("get() returned the wrong bytes")
            del got
        src.close()

        def fresh():
            m = private(n, True)
            touch(m, n)
            m.close()
        time.sleep(args.pause)
        timed(n, "floor: touch new huge-page memory, after a %g s pause" % args.pause, fresh)
        timed(n, "floor: the same at once after a free", fresh)
        path = os.path.join(args.dir, "pocket-first-get-%d.bin" % os.getpid())

        def new_file():
            zeros = bytes(1 << 20)
            with open(path, "wb") as f:
                for i in range(0, n, 1 << 20):
                    f.write(zeros[:min(1 << 20, n - i)])
        try:
            timed(n, "floor: write a new file", new_file)
        finally:
            if os.path.exists(path):
                os.remove(path)
    finally:
        job.deregister()
        job.close()


if __name__ == "__main__":
    main()
