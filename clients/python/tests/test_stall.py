"""A storage node frozen with SIGSTOP (a stalled process, a paused machine), seen from the Python client.

The roles are real children: `pocket metadata` (suspect after 1 s of silence, dead only after 10 minutes) and one
`pocket storage`, so the test can stop exactly that node's process. While it is stopped the metadata server marks it
suspect and the client's get of an object on it fails at once with the typed, retryable NodeUnavailable instead of
hanging on the frozen node; after SIGCONT the same node serves the object again, byte-identical.
"""

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import unittest

import cluster
import pocket

PATIENCE = 90.0


class Role:
    """A `pocket` role as a child process; its output is read line by line until the ready line appears."""

    def __init__(self, args, env, ready_prefix):
        self.lines = []
        self.process = subprocess.Popen(cluster.pocket_executable() + args, env=env, stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        self._ready = threading.Event()
        self.ready_line = None
        self._prefix = ready_prefix
        threading.Thread(target=self._drain, daemon=True).start()
        if not self._ready.wait(PATIENCE) or self.ready_line is None:
            self.stop()
            raise RuntimeError("pocket %s printed no ready line:\n%s" % (args[0], "\n".join(self.lines)))

    def _drain(self):
        for raw in self.process.stdout:
            line = raw.decode("utf-8", "replace").rstrip()
            self.lines.append(line)
            if self.ready_line is None and line.startswith(self._prefix):
                self.ready_line = line
                self._ready.set()
        self._ready.set()

    def field(self, name):
        for part in self.ready_line.split():
            if part.startswith(name + "="):
                return part[len(name) + 1:]
        raise AssertionError("no %s= in %r" % (name, self.ready_line))

    def stop(self):
        p = self.process
        if p.poll() is None:
            # Resumed first: a stopped process would not see its stdin close (--stop-on-stdin-eof).
            os.kill(p.pid, signal.SIGCONT)
            p.stdin.close()
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(30)


class NodeStallTests(unittest.TestCase):

    def setUp(self):
        self.home = tempfile.mkdtemp(prefix="pocket-py-stall-")
        self.env = cluster.clean_environment(self.home)
        self.env["POCKET_CLUSTER_TOKEN"] = secrets.token_hex(16)
        self.roles = []
        self.addCleanup(self._stop)
        metadata = self._start(["metadata", "--host", "127.0.0.1", "--port", "0", "--suspect-after", "1s",
                                "--node-timeout", "10m", "--stop-on-stdin-eof"], "POCKET-METADATA ")
        self.metadata = metadata.field("address")
        self.node = self._start(["storage", "--metadata", self.metadata, "--tier", "dram", "--capacity", "64MiB",
                                 "--stop-on-stdin-eof"], "POCKET-NODE ")
        self.node_id = int(self.node.field("id"))

    def _start(self, args, ready_prefix):
        role = Role(args, self.env, ready_prefix)
        self.roles.append(role)
        return role

    def _stop(self):
        for role in reversed(self.roles):
            role.stop()
        shutil.rmtree(self.home, ignore_errors=True)

    def _wait_for_state(self, job, state):
        deadline = time.monotonic() + PATIENCE
        while True:
            nodes = {n.id: n for n in job.nodes()}
            if nodes[self.node_id].state == state:
                return
            self.assertLess(time.monotonic(), deadline, "node %d did not become %s" % (self.node_id, state))
            time.sleep(0.05)

    def test_a_stopped_node_gives_node_unavailable_at_once_and_its_data_back_after_sigcont(self):
        registered = subprocess.run(
            cluster.pocket_executable() + ["job", "register", "stall", "--metadata", self.metadata, "--json"],
            env=self.env, stdin=subprocess.DEVNULL, capture_output=True, timeout=120)
        self.assertEqual(0, registered.returncode, registered.stderr.decode())
        entry = json.loads(registered.stdout)
        # A request timeout far above the answer expected, so only a fast, typed refusal passes the test.
        client = pocket.Client(self.metadata, timeout=60)
        self.addCleanup(client.close)
        job = client.job(entry["id"], entry["token"])
        data = os.urandom((4 << 20) + 11)
        job.put("kept", data)
        self.assertEqual(data, job.get("kept"))  # the connection to the node is open (and will be frozen)
        self.assertTrue(all(b.node_id == self.node_id for b in job.lookup("kept").blocks))

        pid = self.node.process.pid
        os.kill(pid, signal.SIGSTOP)
        try:
            self._wait_for_state(job, "suspect")
            started = time.monotonic()
            with self.assertRaises(pocket.NodeUnavailable) as caught:
                job.get("kept")
            took = time.monotonic() - started
            self.assertIn("storage node %d" % self.node_id, str(caught.exception))
            self.assertEqual(pocket.NodeUnavailable.status, caught.exception.status)
            sys.stderr.write("\n  NodeUnavailable %.0f ms after the get started (node %d stopped)\n"
                             % (took * 1000, self.node_id))
        finally:
            os.kill(pid, signal.SIGCONT)

        # Resumed: the same node (not a new registration), live again, every byte readable.
        self._wait_for_state(job, "live")
        self.assertEqual([self.node_id], [n.id for n in job.nodes()])
        self.assertEqual(data, job.get("kept"))


if __name__ == "__main__":
    unittest.main()
