"""The C# client and the Python client read each other's objects: `pocket put/get` (the CLI, C#) against Job."""

import hashlib
import json
import os
import tempfile
import unittest

import cluster
import pocket


class InteropTests(unittest.TestCase):
    def test_a_csharp_put_is_read_by_python_and_back(self):
        c = cluster.shared()
        registered = json.loads(c.run("job", "register", "interop", "--json").stdout)
        jobid = registered["id"]
        try:
            # The CLI keeps the job's token in $POCKET_HOME/jobs.json; Job.open finds it there.
            os.environ["POCKET_HOME"] = c.home
            try:
                job = pocket.Job.open(jobid)
            finally:
                os.environ.pop("POCKET_HOME", None)
            with job, tempfile.TemporaryDirectory() as d:
                for size in (5, (3 << 20) + 17):
                    data = os.urandom(size)
                    src = os.path.join(d, "cs-%d" % size)
                    with open(src, "wb") as f:
                        f.write(data)
                    c.run("put", src, "%s/from-cs/%d" % (jobid, size))
                    self.assertEqual(hashlib.sha256(data).digest(),
                                     hashlib.sha256(job.get("from-cs/%d" % size)).digest())
                    job.put("from-py/%d" % size, data)
                    out = os.path.join(d, "py-%d" % size)
                    c.run("get", "%s/from-py/%d" % (jobid, size), out)
                    with open(out, "rb") as f:
                        self.assertEqual(data, f.read())
                stat = json.loads(c.run("stat", "%s/from-py/%d" % (jobid, (3 << 20) + 17), "--json").stdout)
                self.assertEqual((3 << 20) + 17, stat["size"])
        finally:
            c.run("job", "rm", jobid)


if __name__ == "__main__":
    unittest.main()
