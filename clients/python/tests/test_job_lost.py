"""A metadata server killed with SIGKILL, seen from the Python client.

`pocket up --metadata 2` runs both metadata servers as child processes; the controller places two jobs on different
servers. The test kills the server of one job: that job's next request raises the typed pocket.JobLost, naming the
job and saying its data is gone, once the controller has replaced the server at its address; the other job keeps
every byte and goes on writing.
"""

import os
import signal
import unittest

import cluster
import pocket


def metadata_children(parent):
    """{job-numbers offset: pid} of the `pocket metadata` children of ``parent`` (each started with --job-numbers I/N)."""
    found = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % entry, "r", encoding="utf-8") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            with open("/proc/%s/cmdline" % entry, "rb") as f:
                args = f.read().decode("utf-8", "replace").split("\0")
        except (OSError, ValueError, IndexError):
            continue
        if ppid == parent and "metadata" in args and "--job-numbers" in args:
            found[int(args[args.index("--job-numbers") + 1].split("/")[0])] = int(entry)
    return found


class JobLostTests(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.cluster = cluster.Cluster(nodes=2, capacity="64MiB", extra=("--metadata", "2", "--static"))
        cls.controller = pocket.Controller(cls.cluster.controller, cls.cluster.token)

    @classmethod
    def tearDownClass(cls):
        cls.cluster.stop()

    def test_a_job_on_a_killed_metadata_server_gets_job_lost_and_the_other_keeps_its_data(self):
        kept = self.controller.register_job("kept")
        doomed = self.controller.register_job("doomed")
        try:
            self.assertNotEqual(kept.registration["metadata"], doomed.registration["metadata"])
            small, large = os.urandom(1000), os.urandom(3 << 20)
            for job in (kept, doomed):
                job.put("small", small)
                job.put("large", large)

            # The controller placed the second job on the second server (fewest jobs first).
            servers = metadata_children(self.cluster.process.pid)
            self.assertEqual(sorted(servers), [0, 1])
            os.kill(servers[1], signal.SIGKILL)

            with self.assertRaises(pocket.JobLost) as lost:
                doomed.get("large")
            self.assertEqual(lost.exception.status, 18)
            self.assertIn("job %s was lost" % doomed.id, str(lost.exception))
            self.assertIn("register the job again", str(lost.exception))
            with self.assertRaises(pocket.JobLost):
                doomed.put("again", small)

            self.assertEqual(kept.get("small"), small)
            self.assertEqual(kept.get("large"), large)
            kept.put("after", large)
            self.assertEqual(kept.get("after"), large)
        finally:
            kept.close()
            doomed.close()


if __name__ == "__main__":
    unittest.main()
