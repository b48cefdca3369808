"""The modern API against a real `pocket up`: round trips, ranges, listing, deletes, flags, isolation."""

import hashlib
import io
import mmap
import os
import socket
import subprocess
import sys
import tempfile
import threading
import unittest

import cluster
import pocket


def digest(data):
    return hashlib.sha256(data).hexdigest()


class _Stream(io.RawIOBase):
    """A stream that cannot seek (its size is unknown to the client), like a pipe."""

    def __init__(self, data, chunk=100_003):
        self._data = memoryview(data)
        self._pos = 0
        self._chunk = chunk

    def readable(self):
        return True

    def readinto(self, b):
        n = min(len(b), self._chunk, len(self._data) - self._pos)
        b[:n] = self._data[self._pos:self._pos + n]
        self._pos += n
        return n


class ClientTests(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.cluster = cluster.shared()
        cls.controller = pocket.Controller(cls.cluster.controller, cls.cluster.token)
        # Sized for 2 functions, its derived quota (about 48 MiB here) would stop the 100 MiB round trips: no byte limit.
        cls.job = cls.controller.register_job("pytest", functions=2, latency_sensitive=True, max_capacity=0)

    @classmethod
    def tearDownClass(cls):
        try:
            cls.job.deregister()
        finally:
            cls.job.close()

    def test_round_trips_keep_every_byte(self):
        for size in (0, 1, 16 << 10, (64 << 10) - 1, 64 << 10, (64 << 10) + 1, 3 << 20, 100 << 20):
            with self.subTest(size=size):
                data = os.urandom(size)
                key = "round/%d" % size
                self.assertEqual(size, self.job.put(key, data))
                back = self.job.get(key)
                self.assertEqual(size, len(back))
                self.assertEqual(digest(data), digest(back))
                info = self.job.lookup(key)
                self.assertEqual(size, info.size)
                self.assertEqual(size <= 64 << 10, info.inline)
                if size > 64 << 10:
                    self.assertGreaterEqual(sum(b.length for b in info.blocks), size)

    def test_a_fresh_clients_first_large_put_and_get_list_no_nodes(self):
        # A function's first seconds: its Create and Get replies carry the nodes' addresses (asked for with the
        # NODE_ADDRESSES flag), so neither the writer nor the reader needs a ListNodes round trip.
        data = os.urandom(3 << 20)
        with pocket.Job.open(self.job.id, self.job.token, self.job.metadata) as writer:
            writer.put("fresh/3m", data)
            self.assertEqual(0, writer.client.node_listings)
        with pocket.Job.open(self.job.id, self.job.token, self.job.metadata) as reader:
            self.assertEqual(digest(data), digest(reader.get("fresh/3m")))
            self.assertEqual(0, reader.client.node_listings)
            self.assertEqual(0, reader.client._node_addresses_flag(), "a client that knows its nodes stops asking")
            self.assertTrue(reader.nodes())  # listing still works, and counts
            self.assertEqual(1, reader.client.node_listings)

    def test_put_takes_buffers_files_paths_and_streams(self):
        data = os.urandom((5 << 20) + 77)
        self.job.put("src/bytearray", bytearray(data))
        self.job.put("src/memoryview", memoryview(data)[7:])
        # An mmap is a buffer (it also has read(), which must not be mistaken for a stream's).
        mapped = mmap.mmap(-1, len(data))
        mapped[:] = data
        mapped.seek(len(data))
        self.job.put("src/mmap", mapped)
        self.assertEqual(digest(data), digest(self.job.get("src/mmap")))
        with self.assertRaises(TypeError):
            self.job.put("src/number", 12345)
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "in.bin")
            with open(path, "wb") as f:
                f.write(data)
            self.job.put("src/path", path)
            with open(path, "rb") as f:
                self.job.put("src/file", f)
            self.job.put("src/stream", _Stream(data))
            self.job.put("src/small-stream", _Stream(data[:100]))
            self.job.put("src/empty-stream", _Stream(b""))
            for key, want in (("src/bytearray", data), ("src/memoryview", data[7:]), ("src/path", data),
                              ("src/file", data), ("src/stream", data), ("src/small-stream", data[:100]),
                              ("src/empty-stream", b"")):
                self.assertEqual(digest(want), digest(self.job.get(key)), key)
            # get_to: a path and a file object, with and without a range.
            out = os.path.join(d, "out.bin")
            self.assertEqual(len(data), self.job.get_to("src/stream", out))
            with open(out, "rb") as f:
                self.assertEqual(digest(data), digest(f.read()))
            sink = io.BytesIO()
            self.assertEqual(3 << 20, self.job.get_to("src/path", sink, offset=12345, length=3 << 20))
            self.assertEqual(data[12345:12345 + (3 << 20)], sink.getvalue())
            # A refused get leaves an existing file alone.
            with self.assertRaises(pocket.NotFound):
                self.job.get_to("src/missing", out)
            with open(out, "rb") as f:
                self.assertEqual(digest(data), digest(f.read()))

    def test_get_into_fills_a_buffer_in_place(self):
        data = os.urandom((4 << 20) + 3)
        self.job.put("into/big", data)
        buf = bytearray(len(data) + 10)
        self.assertEqual(len(data), self.job.get_into("into/big", buf))
        self.assertEqual(data, buf[:len(data)])
        part = bytearray(1000)
        self.assertEqual(1000, self.job.get_into("into/big", part, offset=(1 << 20) - 500))
        self.assertEqual(data[(1 << 20) - 500:(1 << 20) + 500], part)
        self.job.put("into/small", b"hello")
        small = bytearray(3)
        self.assertEqual(3, self.job.get_into("into/small", small))
        self.assertEqual(b"hel", small)

    def test_a_large_get_fills_every_byte_of_its_unzeroed_buffer(self):
        # Gets of 4 MiB and more allocate their result without zero-filling it (pocket/_memory.py): every byte must
        # come from the object, for whole objects and for ranges that start and end inside extents.
        data = os.urandom((9 << 20) + 5)
        self.job.put("unzeroed/9m", data)
        for offset, length in ((0, -1), (1, (5 << 20) - 2), ((1 << 20) - 1, (4 << 20) + 3), (123, (8 << 20) + 7)):
            with self.subTest(offset=offset, length=length):
                want = data[offset:] if length < 0 else data[offset:offset + length]
                got = self.job.get("unzeroed/9m", offset, length)
                self.assertIsInstance(got, bytearray)
                self.assertEqual(digest(want), digest(got))
                got.extend(b"!")  # an ordinary bytearray the caller owns: it grows and shrinks
                del got[:3]
                self.assertEqual(len(want) - 2, len(got))
        if sys.platform.startswith("linux") and sys.implementation.name == "cpython":
            self.assertIsNotNone(pocket._memory._unfilled, "the unzeroed huge-page allocation should be available")
        small = pocket._memory.receive_buffer(100)
        self.assertEqual(bytearray(100), small)

    def test_a_get_to_a_file_stays_bounded_in_memory(self):
        # A child process puts and gets a 96 MiB object through files; its peak RSS stays far below the object.
        size = 96 << 20
        with tempfile.TemporaryDirectory() as d:
            script = (
                "import os, resource, sys\n"
                "sys.path.insert(0, %r)\n"
                "import pocket\n"
                "job = pocket.Job.open(%r, %r, %r)\n"
                "src, dst = %r, %r\n"
                "with open(src, 'wb') as f:\n"
                "    for _ in range(%d): f.write(os.urandom(1 << 20))\n"
                "base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
                "job.put('bounded/file', src)\n"
                "job.get_to('bounded/file', dst)\n"
                "print(base, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, os.path.getsize(dst))\n"
                % (cluster.CLIENT_ROOT, self.job.id, self.job.token, self.job.metadata,
                   os.path.join(d, "in"), os.path.join(d, "out"), size >> 20))
            out = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=600)
            self.assertEqual(0, out.returncode, out.stderr.decode())
            base_kib, peak_kib, written = (int(x) for x in out.stdout.split())
            self.assertEqual(size, written)
            with open(os.path.join(d, "in"), "rb") as a, open(os.path.join(d, "out"), "rb") as b:
                self.assertEqual(digest(a.read()), digest(b.read()))
            # 8 transfers in flight of one 1 MiB extent each, plus the interpreter's own growth.
            self.assertLess(peak_kib - base_kib, 40 << 10, "peak RSS grew by %d KiB" % (peak_kib - base_kib))
        self.job.delete("bounded/file")

    def test_ranges(self):
        big = os.urandom((3 << 20) + 999)
        small = os.urandom(5000)
        self.job.put("range/big", big)
        self.job.put("range/small", small)
        for key, data in (("range/big", big), ("range/small", small)):
            n = len(data)
            for offset, length in ((0, -1), (0, 0), (1, 10), (n - 1, 1), (n, 0), (100, -1),
                                   ((1 << 20) - 3, 7), (5, (2 << 20) + 1)):
                if offset + max(length, 0) > n:
                    continue
                with self.subTest(key=key, offset=offset, length=length):
                    want = data[offset:] if length < 0 else data[offset:offset + length]
                    self.assertEqual(want, bytes(self.job.get(key, offset, length)))
            with self.assertRaises(pocket.BadRequest):
                self.job.get(key, n + 1)
            with self.assertRaises(pocket.BadRequest):
                self.job.get(key, 0, n + 1)

    def test_list_pages_over_2500_keys_and_count(self):
        keys = ["many/%05d" % i for i in range(2500)]
        for k in keys:
            self.job.put(k, k.encode())
        self.job.put("many/sub/a", b"a")
        self.job.put("many/sub/b", b"b")
        listed = [e.key for e in self.job.list("many/", page_size=1000)]
        self.assertEqual(sorted(keys + ["many/sub/a", "many/sub/b"]), listed)
        first = self.job.list_page("many/", limit=1000)
        self.assertEqual(1000, len(first.entries))
        self.assertTrue(first.has_more)
        self.assertEqual(first.entries[-1].key, first.next_start_after)
        second = self.job.list_page("many/", first.next_start_after, 1000)
        self.assertEqual(keys[1000:2000], [e.key for e in second.entries])
        folded = list(self.job.list("many/", delimited=True, page_size=700))
        self.assertEqual(2501, len(folded))
        self.assertEqual(pocket.ListEntry("many/sub/", 0, True), folded[-1])
        self.assertEqual(pocket.ListEntry("many/00007", len("many/00007"), False), folded[7])
        self.assertEqual(2502, self.job.count("many/"))
        self.assertEqual(2, self.job.count("many/sub/"))
        self.assertEqual(0, self.job.count("nothing-here/"))
        with self.assertRaises(ValueError):
            self.job.list_page("many/", limit=0)

    def test_delete_one_and_recursive(self):
        for i in range(30):
            self.job.put("del/dir/%d" % i, os.urandom(20 << 10 if i % 5 == 0 else 100))
        self.job.put("del/other", b"x")
        self.assertEqual(1, self.job.delete("del/dir/3"))
        self.assertIsNone(self.job.lookup("del/dir/3"))
        with self.assertRaises(pocket.NotFound):
            self.job.delete("del/dir/3")
        self.assertEqual(29, self.job.delete("del/dir/", recursive=True))
        self.assertEqual(0, self.job.count("del/dir/"))
        self.assertEqual(1, self.job.count("del/"))
        self.assertEqual(0, self.job.delete("del/dir/", recursive=True))
        # A deleted key can be written again.
        self.job.put("del/dir/0", b"again")
        self.assertEqual(b"again", self.job.get("del/dir/0"))

    def test_delete_after_read(self):
        for size in (10, 2 << 20):
            key = "dar/%d" % size
            data = os.urandom(size)
            self.job.put(key, data)
            self.assertEqual(data, bytes(self.job.get(key, delete_after_read=True)))
            self.assertIsNone(self.job.lookup(key))
            with self.assertRaises(pocket.NotFound):
                self.job.get(key)
        # A flag of the read only (README: the reader knows it is the last); put refuses it outright.
        with self.assertRaises(TypeError):
            self.job.put("dar/put-flag", b"x", delete_after_read=True)
        self.assertIsNone(self.job.lookup("dar/put-flag"))
        self.job.put("dar/file", os.urandom(3 << 20))
        sink = io.BytesIO()
        self.job.get_to("dar/file", sink, delete_after_read=True)
        self.assertEqual(3 << 20, len(sink.getvalue()))
        self.assertFalse(self.job.exists("dar/file"))

    def test_concurrent_callers_share_the_connections(self):
        errors = []

        def worker(n):
            try:
                for i in range(40):
                    data = os.urandom(100 + n * 1000 + (i % 3) * (40 << 10))
                    key = "conc/%d/%d" % (n, i)
                    self.job.put(key, data)
                    if bytes(self.job.get(key)) != data:
                        errors.append("mismatch " + key)
            except Exception as e:  # reported below
                errors.append(repr(e))

        threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(300)
        self.assertEqual([], errors)
        self.assertEqual(320, self.job.count("conc/"))

    def test_a_connection_closed_while_idle_is_replaced(self):
        self.job.put("idle/k", b"v")
        old = self.job.client._meta
        old._sock.shutdown(socket.SHUT_RD)  # reads now see the end of the stream, as after the server closed it
        old._last_used = 0                  # and it has been idle long enough to be checked before use
        self.assertEqual(b"v", self.job.get("idle/k"))
        self.assertFalse(old.is_connected)
        self.assertIsNot(old, self.job.client._meta)
        self.assertTrue(self.job.client._meta.is_connected)

    def test_usage_and_nodes(self):
        self.job.put("usage/x", b"12345")
        usage = self.job.usage()
        self.assertEqual(self.job.id, usage.job_id)
        self.assertGreater(usage.objects, 0)
        nodes = self.job.nodes()
        self.assertTrue(any(n.state == "live" for n in nodes))
        self.assertTrue(all(n.port > 0 for n in nodes))
        info = self.controller.job(self.job.id)
        self.assertEqual(self.job.id, info["jobId"])


class JobLifecycleTests(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.cluster = cluster.shared()
        cls.controller = pocket.Controller(cls.cluster.controller, cls.cluster.token)

    def test_keep_after_job_outlives_the_job_read_only(self):
        job = self.controller.register_job("keep")
        with job:
            kept_big = os.urandom(2 << 20)
            job.put("kept/big", kept_big, keep_after_job=True)
            job.put("kept/small", b"small", keep_after_job=True)
            job.put("gone", b"not kept")
            job.put("gone-big", os.urandom(1 << 20))
            freed = job.deregister()
            self.assertEqual(2, freed["objectsFreed"])
            # The same token still reads what was kept; the rest is gone; nothing new goes in.
            self.assertEqual(kept_big, bytes(job.get("kept/big")))
            self.assertEqual(b"small", job.get("kept/small"))
            with self.assertRaises(pocket.PocketError):
                job.get("gone")
            with self.assertRaises(pocket.PocketError):
                job.put("new", b"x")

    def test_a_lease_is_asked_for_and_an_ended_jobs_token_is_told_what_happened(self):
        job = self.controller.register_job("leased", lease="1h")
        with job:
            self.assertEqual(3600, job.registration["leaseSeconds"])
            job.put("a", b"x")
            self.controller.deregister(job.id)
            with self.assertRaises(pocket.Unauthorized) as refused:
                job.get("a")
            self.assertIn("job %s has ended: it was deregistered at" % job.id, str(refused.exception))
        with self.assertRaises(pocket.ControllerError) as refused:
            self.controller.register_job("leased", lease="soon")
        self.assertIn("lease", str(refused.exception))

    def test_quotas_from_register_job_are_enforced_and_named(self):
        job = self.controller.register_job("quota", max_capacity="1MiB", max_objects=3, max_key_bytes=40)
        with job:
            self.assertEqual({"maxBytes": 1 << 20, "maxObjects": 3, "maxKeyBytes": 40}, job.registration["quota"])
            job.put("a", b"x" * 100)
            job.put("big", os.urandom(600 << 10))
            # Bytes: 600 KiB more would pass 1 MiB; the refused object does not exist.
            with self.assertRaises(pocket.QuotaExceeded) as refused:
                job.put("big2", os.urandom(600 << 10))
            self.assertEqual(pocket.QuotaExceeded.status, refused.exception.status)
            self.assertIn("may hold %d bytes" % (1 << 20), str(refused.exception))
            self.assertIsNone(job.lookup("big2"))
            # A stream of unknown length that fits is stored although its first batch asks for more.
            job.put("stream", _Stream(b"s" * (100 << 10)))
            # Objects: three are held.
            with self.assertRaises(pocket.QuotaExceeded) as refused:
                job.put("d", b"x")
            self.assertIn("may hold 3 objects and holds 3", str(refused.exception))
            job.delete("a")
            # Key bytes: "big" + "stream" hold 9 of 40.
            with self.assertRaises(pocket.QuotaExceeded) as refused:
                job.put("k" * 32, b"x")
            self.assertIn("key bytes", str(refused.exception))
            job.put("k" * 31, b"x")
            usage = job.usage()
            self.assertEqual((3, 40), (usage.objects, usage.key_bytes))
            self.assertEqual(pocket.JobQuota(1 << 20, 3, 40), usage.quota)

    def test_another_jobs_token_sees_nothing(self):
        a = self.controller.register_job("iso-a")
        b = self.controller.register_job("iso-b")
        try:
            a.put("secret", b"only a")
            a.put("secret-big", os.urandom(1 << 20))
            self.assertIsNone(b.lookup("secret"))
            with self.assertRaises(pocket.NotFound):
                b.get("secret")
            with self.assertRaises(pocket.NotFound):
                b.get("secret-big")
            self.assertEqual([], list(b.list()))
            self.assertEqual(0, b.count())
            self.assertEqual(0, b.delete("", recursive=True))
            self.assertEqual(b"only a", a.get("secret"))
            # b's key space is its own: the same key holds b's own object.
            b.put("secret", b"only b")
            self.assertEqual(b"only a", a.get("secret"))
            # A made-up token is refused outright.
            stranger = pocket.Job(a.client, a.id, os.urandom(16))
            with self.assertRaises(pocket.Unauthorized):
                stranger.get("secret")
            # The job opened elsewhere by id, token and metadata address (how a function gets it).
            with pocket.Job.open(a.id, a.token, a.metadata) as again:
                self.assertEqual(b"only a", again.get("secret"))
        finally:
            a.deregister()
            b.deregister()
            a.close()
            b.close()

    def test_job_open_reads_the_environment(self):
        job = self.controller.register_job("env")
        try:
            job.put("k", b"v")
            saved = dict(os.environ)
            os.environ["POCKET_JOB_TOKEN"] = job.token
            os.environ["POCKET_METADATA"] = job.metadata
            try:
                with pocket.Job.open(job.id) as opened:
                    self.assertEqual(b"v", opened.get("k"))
            finally:
                os.environ.clear()
                os.environ.update(saved)
        finally:
            job.deregister()
            job.close()

    def test_controller_reads_environment_and_lists(self):
        saved = dict(os.environ)
        os.environ["POCKET_CONTROLLER"] = self.cluster.controller
        os.environ["POCKET_CLUSTER_TOKEN"] = self.cluster.token
        try:
            ctl = pocket.Controller()
        finally:
            os.environ.clear()
            os.environ.update(saved)
        self.assertEqual(self.cluster.controller, ctl.url)
        job = ctl.register_job("listed", capacity="64MiB", throughput="1Gbps")
        try:
            self.assertIn(job.id, [j["jobId"] for j in ctl.jobs()])
            self.assertTrue(ctl.cluster()["nodes"])
            self.assertEqual("dram", job.tier)
        finally:
            job.deregister()
            job.close()
        with self.assertRaises(pocket.NotFound):
            ctl.deregister(job.id)


if __name__ == "__main__":
    unittest.main()
