"""docs/gateway.md's note for boto3-based tools (Lithops and others), tested: boto3 (Debian's python3-boto3) with
Signature Version 4 and path-style addressing against the gateway of `pocket up`, endpoint and keys from
`pocket s3 credentials --json`."""

import json
import os
import subprocess
import unittest

import cluster

SCRIPT = r'''
import json, sys
import boto3, botocore.config
creds = json.loads(sys.argv[1])
s3 = boto3.client("s3", endpoint_url=creds["endpoint"], region_name=creds["region"],
                  aws_access_key_id=creds["accessKey"], aws_secret_access_key=creds["secretKey"],
                  config=botocore.config.Config(signature_version="s3v4", s3={"addressing_style": "path"}))
s3.create_bucket(Bucket="lithops-test")
body = bytes(range(256)) * 40000
s3.put_object(Bucket="lithops-test", Key="runs/1/part-0", Body=body)
s3.put_object(Bucket="lithops-test", Key="runs/1/part-1", Body=b"small")
assert s3.get_object(Bucket="lithops-test", Key="runs/1/part-0")["Body"].read() == body
assert s3.get_object(Bucket="lithops-test", Key="runs/1/part-0", Range="bytes=10-19")["Body"].read() == body[10:20]
keys = [o["Key"] for o in s3.list_objects_v2(Bucket="lithops-test", Prefix="runs/1/")["Contents"]]
assert keys == ["runs/1/part-0", "runs/1/part-1"], keys
s3.upload_file(sys.argv[2], "lithops-test", "file")       # managed transfer (multipart above 8 MiB)
s3.download_file("lithops-test", "file", sys.argv[2] + ".back")
s3.delete_object(Bucket="lithops-test", Key="runs/1/part-1")
assert [o["Key"] for o in s3.list_objects_v2(Bucket="lithops-test", Prefix="runs/")["Contents"]] == ["runs/1/part-0"]
print("ok", boto3.__version__)
'''


def python_with_boto3():
    for exe in (os.environ.get("POCKET_PYTHON"), "/usr/bin/python3", "python3"):
        if exe and subprocess.run([exe, "-c", "import boto3"], capture_output=True).returncode == 0:
            return exe
    raise AssertionError("boto3 is not installed: apt-get install python3-boto3 (clients/python/install-deps.sh)")


class S3GatewayTests(unittest.TestCase):
    def test_boto3_with_sigv4_and_path_style_against_the_gateway(self):
        c = cluster.shared()
        creds = json.loads(c.run("s3", "credentials", "--json").stdout)
        self.assertTrue(creds["endpoint"].startswith("http://127.0.0.1:"))
        path = os.path.join(c.home, "upload.bin")
        data = os.urandom(20 << 20)
        with open(path, "wb") as f:
            f.write(data)
        out = subprocess.run([python_with_boto3(), "-c", SCRIPT, json.dumps(creds), path], capture_output=True,
                             timeout=600, env=cluster.clean_environment(c.home))
        self.assertEqual(0, out.returncode, out.stdout.decode() + out.stderr.decode())
        self.assertTrue(out.stdout.decode().startswith("ok"))
        with open(path + ".back", "rb") as f:
            self.assertEqual(data, f.read())


if __name__ == "__main__":
    unittest.main()
