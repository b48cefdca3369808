"""pocket.compat end to end: code written for the original client, positional calls and 0/-1 returns."""

import contextlib
import io
import os
import tempfile
import unittest

import cluster
import pocket
from pocket import compat


class CompatTests(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.cluster = cluster.shared()
        cls.saved = dict(os.environ)
        # Where the original had constants in the module, this one reads the environment.
        os.environ["POCKET_CONTROLLER"] = cls.cluster.controller
        os.environ["POCKET_CLUSTER_TOKEN"] = cls.cluster.token

    @classmethod
    def tearDownClass(cls):
        os.environ.clear()
        os.environ.update(cls.saved)

    def connect(self):
        host, port = self.cluster.metadata.rsplit(":", 1)
        return compat.connect(host, int(port))

    def test_the_original_calls_work_unchanged(self):
        jobid = compat.register_job("compat", 2, 1, 1000, 1)
        self.assertTrue(jobid.startswith("compat-"))
        p = self.connect()
        data = os.urandom(1024)
        big = os.urandom((3 << 20) + 5)
        with tempfile.TemporaryDirectory() as d:
            src = os.path.join(d, "src")
            dst = os.path.join(d, "dst")
            with open(src, "wb") as f:
                f.write(big)
            self.assertEqual(0, compat.create_dir(p, "dir", jobid))
            self.assertEqual(0, compat.put_buffer(p, data, len(data), "dir/tmp-0", jobid))
            self.assertEqual(0, compat.put_buffer(p, "text", 4, "dir/text", jobid))
            self.assertEqual(0, compat.put(p, src, "dir/file", jobid))
            back = bytearray(len(data))
            self.assertEqual(0, compat.get_buffer(p, "dir/tmp-0", back, len(data), jobid))
            self.assertEqual(data, back)
            self.assertEqual(0, compat.get(p, "dir/file", dst, jobid))
            with open(dst, "rb") as f:
                self.assertEqual(big, f.read())
            self.assertEqual(0, compat.lookup(p, "dir/tmp-0", jobid))
            self.assertEqual(0, compat.lookup(p, "dir", jobid))
            self.assertEqual(3, compat.count_files(p, "dir", jobid))
            self.assertEqual(3, compat.count_files(p, "", jobid))
            with contextlib.redirect_stderr(io.StringIO()):
                self.assertEqual(-1, compat.lookup(p, "dir/missing", jobid))
                # Failures return -1 and keep the server's message.
                self.assertEqual(-1, compat.get_buffer(p, "dir/missing", back, len(data), jobid))
                self.assertIsInstance(compat.last_error, pocket.NotFound)
                self.assertEqual(-1, compat.put_buffer(p, data, len(data), "dir/tmp-0", jobid))
                self.assertIsInstance(compat.last_error, pocket.Exists)
                self.assertEqual(-1, compat.get_buffer(p, "dir/tmp-0", b"immutable", 9, jobid))
                self.assertEqual(-1, compat.put(p, os.path.join(d, "no-such-file"), "dir/x", jobid))

            # DELETE_AFTER_READ deletes (the original's did not, for buffers read by another function).
            self.assertEqual(0, compat.get_buffer(p, "dir/tmp-0", back, len(data), jobid, True))
            self.assertEqual(data, back)
            with contextlib.redirect_stderr(io.StringIO()):
                self.assertEqual(-1, compat.lookup(p, "dir/tmp-0", jobid))
            self.assertEqual(0, compat.get(p, "dir/file", dst, jobid, True))
            self.assertEqual(1, compat.count_files(p, "dir", jobid))

            # delete: one object, a directory with what is in it; nothing there is -1.
            self.assertEqual(0, compat.put_buffer(p, data, 10, "dir/sub/a", jobid))
            self.assertEqual(0, compat.put_buffer(p, data, 10, "dir/sub/b", jobid))
            self.assertEqual(0, compat.delete(p, "dir/text", jobid))
            self.assertEqual(0, compat.delete(p, "dir/sub", jobid))
            self.assertEqual(0, compat.count_files(p, "dir", jobid))
            with contextlib.redirect_stderr(io.StringIO()):
                self.assertEqual(-1, compat.delete(p, "dir/sub", jobid))

        # PERSIST_AFTER_JOB keeps the object past the job (read-only under its token).
        self.assertEqual(0, compat.put_buffer(p, data, len(data), "kept", jobid, True))
        self.assertEqual(0, compat.put_buffer(p, data, len(data), "dropped", jobid))
        self.assertEqual(0, compat.deregister_job(jobid))
        back = bytearray(len(data))
        self.assertEqual(0, compat.get_buffer(p, "kept", back, len(data), jobid))
        self.assertEqual(data, back)
        with contextlib.redirect_stderr(io.StringIO()):
            self.assertEqual(-1, compat.get_buffer(p, "dropped", back, len(data), jobid))
            self.assertEqual(-1, compat.deregister_job(jobid))
        self.assertEqual(0, compat.close(p))

    def test_a_function_gets_its_token_from_the_environment(self):
        jobid = compat.register_job("compat-fn")
        token = compat._jobs[jobid][0]
        try:
            compat._jobs.pop(jobid)  # as in a fresh function process
            os.environ["POCKET_JOB_TOKEN"] = token
            p = self.connect()
            self.assertEqual(0, compat.put_buffer(p, b"abc", 3, "k", jobid))
            out = bytearray(3)
            self.assertEqual(0, compat.get_buffer(p, "k", out, 3, jobid))
            self.assertEqual(b"abc", out)
            compat.close(p)
        finally:
            os.environ.pop("POCKET_JOB_TOKEN", None)
            compat._jobs[jobid] = (token, None)
            self.assertEqual(0, compat.deregister_job(jobid))

    def test_register_without_a_controller_returns_none(self):
        os.environ["POCKET_CONTROLLER"] = "http://127.0.0.1:1"
        try:
            with contextlib.redirect_stderr(io.StringIO()) as err:
                self.assertIsNone(compat.register_job("nowhere"))
            self.assertIn("Error registering job", err.getvalue())
        finally:
            os.environ["POCKET_CONTROLLER"] = self.cluster.controller


if __name__ == "__main__":
    unittest.main()
