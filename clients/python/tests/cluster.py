"""A real Pocket cluster for the tests: the built `pocket up` as a child process on free ports.

`pocket up --port 0 --controller-port 0 --gateway-port 0` binds free ports and writes them to
$POCKET_HOME/cluster.json once it prints "Pocket is up"; each cluster gets its own temporary POCKET_HOME.
The executable is $POCKET_EXE, else the Release (then Debug) build of src/Pocket.Cli in this repository.
"""

import atexit
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
CLIENT_ROOT = os.path.dirname(HERE)
REPO = os.path.dirname(os.path.dirname(CLIENT_ROOT))
START_TIMEOUT = 120.0
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")

if CLIENT_ROOT not in sys.path:
    sys.path.insert(0, CLIENT_ROOT)


def pocket_executable():
    exe = os.environ.get("POCKET_EXE")
    if exe:
        return [exe]
    for config in ("Release", "Debug"):
        build = os.path.join(REPO, "src", "Pocket.Cli", "bin", config, "net10.0")
        if os.path.exists(os.path.join(build, "pocket")):
            return [os.path.join(build, "pocket")]
        if os.path.exists(os.path.join(build, "pocket.dll")):
            return ["dotnet", os.path.join(build, "pocket.dll")]
    found = shutil.which("pocket")
    if found:
        return [found]
    raise RuntimeError("no built pocket executable: run `dotnet build Pocket.slnx -c Release` or set $POCKET_EXE")


def clean_environment(home):
    env = {k: v for k, v in os.environ.items() if not k.startswith("POCKET_")}
    env["POCKET_HOME"] = home
    return env


class Cluster:
    """`pocket up` in its own POCKET_HOME. ``metadata``, ``controller``, ``token``, ``gateway`` and the S3 keys
    come from its cluster.json. ``stop()`` (also at exit) ends it with SIGTERM and waits for it."""

    def __init__(self, nodes=2, capacity="256MiB", extra=()):
        self.home = tempfile.mkdtemp(prefix="pocket-py-tests-")
        self.env = clean_environment(self.home)
        self.lines = []
        args = pocket_executable() + ["up", "--port", "0", "--controller-port", "0", "--gateway-port", "0",
                                      "--nodes", str(nodes), "--capacity", capacity, "--for", "60m"] + list(extra)
        # A session of its own, so stopping it can reach its storage nodes too if it hangs.
        self.process = subprocess.Popen(args, env=self.env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        stderr=subprocess.STDOUT, start_new_session=True)
        self._up = threading.Event()
        threading.Thread(target=self._drain, daemon=True).start()
        atexit.register(self.stop)
        deadline = time.monotonic() + START_TIMEOUT
        while not self._up.wait(0.1):
            if self.process.poll() is not None or time.monotonic() > deadline:
                output = "\n".join(self.lines)
                self.stop()
                raise RuntimeError("pocket up did not come up:\n" + output)
        with open(os.path.join(self.home, "cluster.json"), "r", encoding="utf-8") as f:
            state = json.load(f)
        self.metadata = state["metadata"]
        self.controller = state["controller"]
        self.token = state["clusterToken"]
        self.gateway = state.get("gateway")
        self.gateway_access_key = state.get("gatewayAccessKey")
        self.gateway_secret_key = state.get("gatewaySecretKey")

    def _drain(self):
        for raw in self.process.stdout:
            line = _ANSI.sub("", raw.decode("utf-8", "replace").rstrip())
            self.lines.append(line)
            if "Pocket is up" in line:
                self._up.set()

    def run(self, *args, env=None, check=True):
        """Runs a `pocket` client verb against this cluster; returns the CompletedProcess."""
        full = dict(self.env)
        full.update(env or {})
        result = subprocess.run(pocket_executable() + list(args), env=full, stdin=subprocess.DEVNULL,
                                capture_output=True, timeout=300)
        if check and result.returncode != 0:
            raise AssertionError("pocket %s failed (%d):\n%s\n%s" % (" ".join(args), result.returncode,
                                                                     result.stdout.decode(), result.stderr.decode()))
        return result

    def stop(self):
        p = self.process
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait(30)
        try:
            p.stdin.close()
        except OSError:
            pass
        shutil.rmtree(self.home, ignore_errors=True)


_shared = None
_shared_lock = threading.Lock()


def shared():
    """One cluster for every test module of this run (started on first use, stopped at exit)."""
    global _shared
    with _shared_lock:
        if _shared is None:
            _shared = Cluster()
        return _shared
