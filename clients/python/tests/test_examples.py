"""The examples run end to end at a small size (not timed): latency.py against Pocket and a real Redis,
throughput.py, and bench/python-first-get.py."""

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import unittest

import cluster

EXAMPLES = os.path.join(cluster.CLIENT_ROOT, "examples")


def python_with_redis():
    """$POCKET_PYTHON, else the first of the system interpreter and this one that has redis-py."""
    candidates = [os.environ.get("POCKET_PYTHON"), "/usr/bin/python3", sys.executable]
    for exe in candidates:
        if exe and os.path.exists(exe) and subprocess.run([exe, "-c", "import redis"],
                                                          capture_output=True).returncode == 0:
            return exe
    raise AssertionError("no interpreter with redis-py: install python3-redis (clients/python/test.sh does)")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ExampleTests(unittest.TestCase):
    def test_latency_against_pocket_and_redis(self):
        server = shutil.which("redis-server")
        self.assertIsNotNone(server, "redis-server is not installed (clients/python/test.sh installs it)")
        c = cluster.shared()
        port = free_port()
        redis = subprocess.Popen([server, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                                  "--appendonly", "no"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 60
            while True:
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=1).close()
                    break
                except OSError:
                    self.assertLess(time.monotonic(), deadline, "redis-server did not start")
                    time.sleep(0.1)
            out = subprocess.run([python_with_redis(), os.path.join(EXAMPLES, "latency.py"), "--iterations", "200",
                                  "--rounds", "2", "--redis", "127.0.0.1:%d" % port, "--controller", c.controller,
                                  "--token", c.token], capture_output=True, timeout=600, env=cluster.clean_environment(c.home))
            text = out.stdout.decode()
            self.assertEqual(0, out.returncode, text + out.stderr.decode())
            for name in ("put_buffer", "get_buffer", "lookup", "set", "get", "exists", "p50 ratio Pocket/Redis"):
                self.assertIn(name, text)
            self.assertIn("     400  mean", text)
        finally:
            redis.terminate()
            redis.wait(30)

    def test_throughput_moves_and_verifies_an_object(self):
        c = cluster.shared()
        with tempfile.TemporaryDirectory() as d:
            out = subprocess.run([sys.executable, os.path.join(EXAMPLES, "throughput.py"), "--size", "8MiB",
                                  "--repeat", "1", "--dir", d, "--controller", c.controller, "--token", c.token],
                                 capture_output=True, timeout=600, env=cluster.clean_environment(c.home))
            text = out.stdout.decode()
            self.assertEqual(0, out.returncode, text + out.stderr.decode())
            self.assertIn("verified True", text)
            self.assertIn("size ok True", text)
            self.assertEqual([], os.listdir(d))

    def test_first_get_benchmark_runs(self):
        # bench/python-first-get.py (docs/benchmarks.md) at a small size, so the recorded command keeps working.
        c = cluster.shared()
        script = os.path.join(cluster.REPO, "bench", "python-first-get.py")
        with tempfile.TemporaryDirectory() as d:
            out = subprocess.run([sys.executable, script, "--size", "8MiB", "--dir", d, "--pause", "0.1",
                                  "--controller", c.controller, "--token", c.token], capture_output=True, timeout=600,
                                 env=cluster.clean_environment(c.home))
            text = out.stdout.decode()
            self.assertEqual(0, out.returncode, text + out.stderr.decode())
            for row in ("bytearray: first get_into", "mmap private huge pages: second get_into",
                        "get(): after a 0.1 s pause", "get(): at once after a free",
                        "floor: the same at once after a free", "floor: write a new file"):
                self.assertIn(row, text)
            self.assertEqual([], os.listdir(d))


if __name__ == "__main__":
    unittest.main()
