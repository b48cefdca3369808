"""Every typed error the client raises, each provoked against a real cluster where the server can be made to send
it, and each carrying the server's message."""

import io
import os
import signal
import socket
import struct
import time
import unittest

import cluster
import pocket
from pocket import _wire as w
from pocket import errors


class _HugeFile(io.RawIOBase):
    """A seekable stream that claims a terabyte: the put asks for that much space up front."""

    def readable(self):
        return True

    def seekable(self):
        return True

    def tell(self):
        return 0

    def seek(self, offset, whence=0):
        return (1 << 40) if whence == io.SEEK_END else 0

    def readinto(self, b):
        b[:] = bytes(len(b))
        return len(b)


class ErrorTests(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.cluster = cluster.shared()
        cls.controller = pocket.Controller(cls.cluster.controller, cls.cluster.token)
        # No byte quota (0): test_capacity_exceeded fills the cluster, which a quota would stop first.
        cls.job = cls.controller.register_job("errors", max_capacity=0)

    @classmethod
    def tearDownClass(cls):
        cls.job.deregister()
        cls.job.close()

    def assertRaisesWithMessage(self, cls, fragment, fn, *args, **kwargs):
        with self.assertRaises(cls) as caught:
            fn(*args, **kwargs)
        self.assertIn(fragment, str(caught.exception))
        self.assertIsInstance(caught.exception, pocket.PocketError)
        return caught.exception

    def test_a_server_that_never_answers_times_out_with_a_typed_error(self):
        # A real listener that accepts and reads but never replies (a stalled server): with timeout= the call fails
        # as ConnectionLost naming the timeout instead of waiting forever, and the client stays usable for others.
        with socket.create_server(("127.0.0.1", 0)) as silent:
            port = silent.getsockname()[1]
            client = pocket.Client("127.0.0.1:%d" % port, timeout=0.5)
            try:
                job = client.job("silent-1", "00" * 16)
                e = self.assertRaisesWithMessage(pocket.ConnectionLost, "timed out", job.lookup, "k")
                self.assertIsInstance(e, pocket.InternalError)
            finally:
                client.close()
        # The cluster's own job is unaffected.
        self.job.put("after-timeout", b"x")
        self.assertEqual(b"x", self.job.get("after-timeout"))

    def test_not_found(self):
        e = self.assertRaisesWithMessage(pocket.NotFound, "nope", self.job.get, "nope")
        self.assertEqual(w.NOT_FOUND, e.status)
        self.assertIsInstance(e, errors.ObjectNotFoundException)  # the C# name
        self.assertRaisesWithMessage(pocket.NotFound, "nope", self.job.delete, "nope")

    def test_exists(self):
        for data in (b"x", os.urandom(1 << 20)):
            key = "twice-%d" % len(data)
            self.job.put(key, data)
            self.assertRaisesWithMessage(pocket.Exists, key, self.job.put, key, data)
            self.assertEqual(data, bytes(self.job.get(key)))

    def test_capacity_exceeded(self):
        e = self.assertRaisesWithMessage(pocket.CapacityExceeded, "capacity", self.job.put, "huge", _HugeFile())
        self.assertEqual(w.CAPACITY_EXCEEDED, e.status)
        self.assertFalse(self.job.exists("huge"))

    def test_bad_request_for_a_range_outside_the_object(self):
        self.job.put("ranged", b"0123456789")
        self.assertRaisesWithMessage(pocket.BadRequest, "outside", self.job.get, "ranged", 5, 6)

    def test_invalid_key(self):
        for key in ("a/../b", "", "a//b", "x\x01"):
            with self.subTest(key=key):
                e = self.assertRaisesWithMessage(pocket.InvalidKey, "", self.job.put, key, b"data")
                self.assertTrue(str(e))

    def test_unauthorized(self):
        stranger = pocket.Job(self.job.client, "nobody-1", os.urandom(16))
        self.assertRaisesWithMessage(pocket.Unauthorized, "", stranger.put, "k", b"v")
        self.assertRaisesWithMessage(pocket.Unauthorized, "", stranger.count)
        wrong = pocket.Controller(self.cluster.controller, "0" * 32)
        e = self.assertRaisesWithMessage(pocket.Unauthorized, "", wrong.register_job, "nope")
        self.assertIsInstance(e, pocket.ControllerError)
        self.assertEqual(401, e.http_status)

    def test_controller_bad_request_names_the_field(self):
        e = self.assertRaisesWithMessage(pocket.BadRequest, "capacity", self.controller.register_job, "bad",
                                         capacity="-5GiB")
        self.assertEqual(400, e.http_status)
        self.assertEqual("capacity", e.field)

    def test_frame_too_large_for_an_inline_object(self):
        # The client never sends an inline object over the server's limit; a raw request shows the server's answer.
        body = w.s("big-inline") + w.u32(100 << 10)
        self.assertRaisesWithMessage(pocket.FrameTooLarge, "inline", self.job.client._meta_call,
                                     w.PUT_SMALL, 0, self.job._token, (body, bytes(100 << 10)))
        self.assertFalse(self.job.exists("big-inline"))

    def test_unknown_opcode(self):
        self.assertRaisesWithMessage(pocket.UnknownOpcode, "", self.job.client._meta_call, 99, 0, self.job._token, ())
        # The connection stays usable after an error reply.
        self.assertEqual(0, self.job.count("none/"))

    def test_version_mismatch(self):
        host, port = self.job.metadata.rsplit(":", 1)
        with socket.create_connection((host, int(port)), timeout=30) as s:
            s.sendall(struct.pack("<BBHHHiI16s", 2, w.PING, 0, 0, 0, 0, 7, bytes(16)))
            header = b""
            while len(header) < 32:
                chunk = s.recv(32 - len(header))
                self.assertTrue(chunk, "closed without a reply")
                header += chunk
            _, _, flags, status, _, length, _, _ = w.HEADER.unpack(header)
            body = b""
            while len(body) < length:
                body += s.recv(length - len(body))
        e = errors.from_status(status, body.decode())
        self.assertIsInstance(e, pocket.VersionMismatch)
        self.assertTrue(flags & w.REPLY)

    def test_every_status_has_its_class_and_keeps_the_message(self):
        expected = {
            w.NOT_FOUND: pocket.NotFound, w.EXISTS: pocket.Exists, w.CAPACITY_EXCEEDED: pocket.CapacityExceeded,
            w.NODE_LOST: pocket.NodeLost, w.BAD_REQUEST: pocket.BadRequest, w.UNKNOWN_OPCODE: pocket.UnknownOpcode,
            w.FRAME_TOO_LARGE: pocket.FrameTooLarge, w.UNAUTHORIZED: pocket.Unauthorized,
            w.VERSION_MISMATCH: pocket.VersionMismatch, w.NO_NODES: pocket.NoNodes,
            w.STALE_GRANT: pocket.StaleGrant, w.INTERNAL_ERROR: pocket.InternalError,
            w.INVALID_KEY: pocket.InvalidKey, w.SHUTTING_DOWN: pocket.ShuttingDown, w.IO_ERROR: pocket.IoError,
            w.NODE_UNAVAILABLE: pocket.NodeUnavailable,
        }
        for status, cls in expected.items():
            e = errors.from_status(status, "message %d" % status)
            self.assertIs(cls, type(e))
            self.assertEqual(status, e.status)
            self.assertEqual("message %d" % status, str(e))
        self.assertIsInstance(errors.from_status(w.NO_NODES, ""), pocket.CapacityExceeded)
        unknown = errors.from_status(200, "later")
        self.assertIs(pocket.PocketError, type(unknown))
        self.assertEqual(200, unknown.status)

    def test_unreachable_server(self):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        s.close()
        job = pocket.Job(pocket.Client("127.0.0.1:%d" % port), "x-1", bytes(16))
        self.assertRaisesWithMessage(pocket.InternalError, "unreachable", job.get, "k")
        e = self.assertRaisesWithMessage(pocket.ControllerError, "unreachable",
                                         pocket.Controller("http://127.0.0.1:%d" % port, "t").jobs)
        self.assertIsNone(e.http_status)


class SmallClusterTests(unittest.TestCase):
    """A cluster of its own: the tests fill it, then kill its storage nodes (in this order). Static: the autoscaler
    (on by default) would add a node when the fill runs capacity high, and the tests need exactly these two."""

    @classmethod
    def setUpClass(cls):
        cls.cluster = cluster.Cluster(nodes=2, capacity="64MiB", extra=("--static",))
        cls.controller = pocket.Controller(cls.cluster.controller, cls.cluster.token)
        # No byte quota (0): the tests fill the cluster, which a quota would stop first.
        cls.job = cls.controller.register_job("small", max_capacity=0)

    @classmethod
    def tearDownClass(cls):
        cls.job.close()
        cls.cluster.stop()

    def test_1_stale_grant(self):
        # Read grants of an object, then delete it and fill its space again: the old grants must not read the new
        # object's bytes. (Job.get turns a stale grant into NotFound; the raw read shows the status.)
        job = self.job
        first = os.urandom(1 << 20)
        job.put("stale/a", first)
        _, _, extents, _ = job._get_layout("stale/a", 0, -1, False)
        job.delete("stale/a")
        # Fill the cluster (2 x 64 MiB), so the freed blocks are written again.
        with self.assertRaises(pocket.CapacityExceeded):
            for i in range(200):
                job.put("stale/fill-%d" % i, bytes(4 << 20))
        for i in range(32):
            try:
                job.put("stale/small-fill-%d" % i, bytes(64 << 10))
            except pocket.CapacityExceeded:
                break
        statuses = set()
        for extent in extents:
            into = memoryview(bytearray(extent.length))
            status, body, _ = job.client._node_call(
                extent.node_id, "stale/a", job._token, w.READ_EXTENT,
                (extent.grant + w.i32(0) + w.i32(extent.length),), into)
            statuses.add(status)
            if status == w.STALE_GRANT:
                e = errors.from_status(status, bytes(body).decode())
                self.assertIsInstance(e, pocket.StaleGrant)
                self.assertTrue(str(e))
        self.assertIn(w.STALE_GRANT, statuses)

    def test_2_node_lost_and_no_nodes(self):
        c = self.cluster
        job = self.job
        job.delete("", recursive=True)
        data = os.urandom(4 << 20)
        job.put("striped", data)
        job.put("inline", b"still here")
        nodes = {b.node_id for b in job.lookup("striped").blocks}
        pids = children(c.process.pid)
        self.assertEqual(2, len(pids), "expected two storage node processes")
        for pid in pids:
            os.kill(pid, signal.SIGKILL)
        # The metadata server notices a node's connection close at once; wait for it (bounded).
        deadline = time.monotonic() + 60
        while True:
            try:
                job.get("striped")
            except pocket.NodeLost as e:
                self.assertIn("striped", str(e))
                self.assertTrue(any(str(n) in str(e) for n in nodes))
                break
            except pocket.PocketError:
                pass
            self.assertLess(time.monotonic(), deadline, "no NodeLost after the nodes died")
            time.sleep(0.2)
        # The object may sit on one node only: the other node's loss can be noticed later. Wait (bounded) until the
        # metadata server has no live node, or a put could still be granted space on the dead one.
        while any(n.state == "live" for n in job.nodes()):
            self.assertLess(time.monotonic(), deadline, "a killed node is still listed live")
            time.sleep(0.2)
        self.assertEqual(b"still here", job.get("inline"))
        with self.assertRaises(pocket.CapacityExceeded) as caught:
            job.put("after", os.urandom(1 << 20))
        self.assertIsInstance(caught.exception, pocket.NoNodes)


def children(pid):
    """Process ids of the `pocket storage` children of ``pid`` (Linux /proc); its metadata server is a child too."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % entry, "r") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        if int(fields[1]) == pid and fields[0] not in ("Z", "X"):
            try:
                with open("/proc/%s/cmdline" % entry, "rb") as f:
                    args = f.read().split(b"\0")
            except OSError:
                continue
            if b"storage" in args:
                found.append(int(entry))
    return found


if __name__ == "__main__":
    unittest.main()
