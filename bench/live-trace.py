#!/usr/bin/env python3
"""A shipped autoscaler trace replayed against a real `pocket up` (elastic, the default), beside the simulator.

Reads a trace (src/Pocket.Controller/Simulation/NAME.json, or a file), compresses its time by --speed and scales its
throughput and bytes down so that this machine can drive them: the nodes are told a bandwidth of --node-bandwidth
(`pocket up --node-bandwidth dram=...`) and hold --node-capacity (`pocket up --capacity`), and every job's demand is
scaled by the same factors as the node class (trace node bandwidth / --node-bandwidth, trace node capacity /
--node-capacity), so each resource's utilisation is the trace's. Then:
  1. writes that compressed, scaled trace and runs `pocket simulate --trace FILE --json` on it (the same policy code);
  2. starts `pocket up` in a fresh home (ports 0, no gateway, the minimum of the trace's policy), and replays the jobs:
     each registers through the controller at its (compressed) start with its scaled peaks as hints, keeps its bytes
     at the profile's level with 1 MiB objects (put new, delete old) and drives the profile's throughput with gets
     of those objects (puts count too), paced every 0.2 s, and deregisters at its end;
  3. every second reads GET /v1/cluster and counts the nodes listed live or draining (node-seconds), until the
     jobs have ended and the cluster has been back at its minimum for --settle seconds;
and prints live node-seconds beside the simulated ones, the throughput the jobs got against what they asked, and
the scaling events. Python standard library plus the Python client in clients/python.

usage: bench/live-trace.py [--trace paper-three-jobs] [--speed 2] [--node-bandwidth 200Mbps] [--node-capacity 256MiB]
                           [--settle 20] [--json]
"""

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time

here = os.path.dirname(os.path.abspath(__file__))
root = os.path.dirname(here)
sys.path.insert(0, os.path.join(root, "clients", "python"))

from pocket.controller import Controller  # noqa: E402

OBJECT = 1 << 20
UNITS = {"": 1, "k": 1e3, "m": 1e6, "g": 1e9, "t": 1e12}
BYTE_UNITS = {"b": 1, "kb": 1e3, "mb": 1e6, "gb": 1e9, "tb": 1e12, "kib": 1 << 10, "mib": 1 << 20, "gib": 1 << 30, "tib": 1 << 40}


def bits_per_second(value):
    if isinstance(value, (int, float)):
        return float(value)
    m = re.fullmatch(r"\s*([\d.]+)\s*([kmgt]?)(bps|b/s)\s*", value.lower())
    if m:
        return float(m.group(1)) * UNITS[m.group(2)]
    m = re.fullmatch(r"\s*([\d.]+)\s*([kmgt]?i?)b/s\s*", value.lower())
    if m:
        return float(m.group(1)) * byte_count(m.group(2) + "b") * 8
    if re.fullmatch(r"\s*[\d.]+\s*", value):
        return float(value)
    raise ValueError("not a throughput: %r" % value)


def byte_count(value):
    if isinstance(value, (int, float)):
        return float(value)
    m = re.fullmatch(r"\s*([\d.]+)\s*([kmgt]?i?b)?\s*", value.lower())
    if not m:
        raise ValueError("not a size: %r" % value)
    return float(m.group(1)) * BYTE_UNITS[m.group(2) or "b"]


def load_trace(name):
    path = name if os.path.exists(name) else os.path.join(root, "src", "Pocket.Controller", "Simulation", name + ".json")
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def profile_points(job):
    """The job's profile as (at, bits/s, bytes), with omitted values carried over as the trace format says."""
    points, bits, held = [], 0.0, 0.0
    for p in job["profile"]:
        bits = bits_per_second(p["throughput"]) if "throughput" in p else bits
        held = byte_count(p["capacity"]) if "capacity" in p else held
        points.append((float(p["at"]), bits, held))
    return points


def at(points, t):
    if t < 0 or t >= points[-1][0]:
        return 0.0, 0.0
    for i in range(len(points) - 1, -1, -1):
        a, bits, held = points[i]
        if a <= t:
            if i == len(points) - 1:
                return bits, held
            b, bits2, held2 = points[i + 1]
            f = (t - a) / (b - a)
            return bits + f * (bits2 - bits), held + f * (held2 - held)
    return 0.0, 0.0


def scaled_trace(trace, speed, bw_scale, cap_scale, node_bw, node_cap):
    """The trace with time / speed, throughput / bw_scale and bytes / cap_scale, its node class the scaled one."""
    out = dict(trace)
    out["name"] = trace.get("name", "trace") + "-live"
    out["nodeClasses"] = {"dram": {"bandwidth": node_bw, "capacity": node_cap,
                                   "cpuAtFullBandwidth": trace.get("nodeClasses", {}).get("dram", {}).get("cpuAtFullBandwidth", 0.5)}}
    jobs = []
    for job in trace["jobs"]:
        j = {k: v for k, v in job.items() if k != "profile"}
        j["start"] = float(job.get("start", 0)) / speed
        j["profile"] = [{"at": a / speed, "throughput": bits / bw_scale, "capacity": int(held / cap_scale)}
                        for a, bits, held in profile_points(job)]
        jobs.append(j)
    out["jobs"] = jobs
    return out


class Replayer(threading.Thread):
    """One job: registered at its start with its peaks as hints; bytes at the profile's level; throughput as gets."""

    def __init__(self, controller, job, t0, stats):
        super().__init__(daemon=True)
        self.controller, self.job, self.t0, self.stats = controller, job, t0, stats
        self.points = profile_points(job)
        self.error = None

    def run(self):
        try:
            self._run()
        except Exception as e:  # reported at the end: one job failing must not hide the others' figures
            self.error = "%s: %s" % (type(e).__name__, e)

    def _run(self):
        start, end = self.t0 + self.job["start"], self.t0 + self.job["start"] + self.points[-1][0]
        time.sleep(max(0.0, start - time.time()))
        peak_bits = max(p[1] for p in self.points)
        peak_bytes = max(p[2] for p in self.points)
        job = self.controller.register_job(self.job["name"], throughput=peak_bits, capacity=int(max(peak_bytes, OBJECT)), lease="10m")
        payload = os.urandom(OBJECT)
        keys, serial, asked, moved, cursor = [], 0, 0.0, 0.0, 0
        last = time.time()
        try:
            while True:
                now = time.time()
                if now >= end:
                    break
                bits, held = at(self.points, now - start)
                dt = now - last
                last = now
                asked += bits / 8 * dt
                budget = asked - moved
                # Bytes first: the profile's level, in whole objects.
                want = int(held // OBJECT)
                while len(keys) > want:
                    job.delete(keys.pop())
                while len(keys) < want and time.time() < end:
                    key = "o/%d" % serial
                    serial += 1
                    job.put(key, payload)
                    keys.append(key)
                    moved += OBJECT
                    budget -= OBJECT
                # Then the rest of the throughput this tick as gets (puts and deletes of a spare key without data).
                while budget >= OBJECT and time.time() < end:
                    if keys:
                        cursor = (cursor + 1) % len(keys)
                        job.get(keys[cursor])
                    else:
                        job.put("spare", payload)
                        job.delete("spare")
                    moved += OBJECT
                    budget -= OBJECT
                time.sleep(max(0.0, 0.2 - (time.time() - now)))
        finally:
            self.controller.deregister(job.id)
            job.close()
            with self.stats["lock"]:
                self.stats["asked"] += asked
                self.stats["moved"] += moved


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trace", default="paper-three-jobs", help="a shipped trace's name or a trace file")
    ap.add_argument("--speed", type=float, default=2.0, help="time compression: trace seconds per real second")
    ap.add_argument("--node-bandwidth", default="200Mbps", help="bandwidth the nodes are told (pocket up --node-bandwidth)")
    ap.add_argument("--node-capacity", default="256MiB", help="capacity of one node (pocket up --capacity)")
    ap.add_argument("--settle", type=float, default=20.0, help="seconds at the minimum after the last job before stopping")
    ap.add_argument("--pocket", default=os.path.join(root, "pocket"), help="the pocket command")
    ap.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = ap.parse_args()

    trace = load_trace(args.trace)
    node_class = trace.get("nodeClasses", {}).get("dram", {})
    bw_scale = bits_per_second(node_class.get("bandwidth", "8Gbps")) / bits_per_second(args.node_bandwidth)
    cap_scale = byte_count(node_class.get("capacity", "60GB")) / byte_count(args.node_capacity)
    if any(j.get("tier", "dram") != "dram" for j in trace["jobs"]):
        sys.exit("live-trace: only dram traces are replayed")
    live_trace = scaled_trace(trace, args.speed, bw_scale, cap_scale, args.node_bandwidth, int(byte_count(args.node_capacity)))
    policy = trace.get("policy", {})
    min_nodes = int(policy.get("minNodes", 2))

    home = tempfile.mkdtemp(prefix="pocket-live-trace-")
    trace_file = os.path.join(home, "trace.json")
    with open(trace_file, "w", encoding="utf-8") as f:
        json.dump(live_trace, f, indent=1)
    env = dict(os.environ, POCKET_HOME=home)
    simulated = json.loads(subprocess.run([args.pocket, "simulate", "--trace", trace_file, "--json"], env=env, check=True,
                                          capture_output=True, text=True).stdout)

    up = subprocess.Popen([args.pocket, "up", "--nodes", str(min_nodes), "--port", "0", "--controller-port", "0",
                           "--no-gateway", "--capacity", args.node_capacity, "--node-bandwidth", "dram=" + args.node_bandwidth],
                          env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    log = []
    threading.Thread(target=lambda: [log.append(line) for line in up.stdout], daemon=True).start()
    try:
        deadline = time.time() + 180
        while not os.path.exists(os.path.join(home, "cluster.json")):
            if up.poll() is not None or time.time() > deadline:
                sys.exit("live-trace: pocket up did not start:\n" + "".join(log[-30:]))
            time.sleep(0.5)
        with open(os.path.join(home, "cluster.json"), encoding="utf-8") as f:
            cluster = json.load(f)
        controller = Controller(cluster["controller"], cluster["clusterToken"])
        while len([n for n in controller.cluster()["nodes"] if n["state"] == "live"]) < min_nodes:
            time.sleep(0.5)

        stats = {"lock": threading.Lock(), "asked": 0.0, "moved": 0.0}
        t0 = time.time() + 1.0
        jobs = [Replayer(controller, j, t0, stats) for j in live_trace["jobs"]]
        for j in jobs:
            j.start()
        last_end = t0 + max(j["start"] + profile_points(j)[-1][0] for j in live_trace["jobs"])

        node_seconds, seconds, timeline, settled_since = 0.0, 0, [], None
        next_tick = t0
        while True:
            time.sleep(max(0.0, next_tick - time.time()))
            next_tick += 1.0
            nodes = [n for n in controller.cluster()["nodes"] if n["state"] in ("live", "draining")]
            node_seconds += len(nodes)
            seconds += 1
            timeline.append(len(nodes))
            if time.time() >= last_end and all(not j.is_alive() for j in jobs):
                settled_since = settled_since or (time.time() if len(nodes) <= min_nodes else None)
                if len(nodes) > min_nodes:
                    settled_since = None
                if settled_since and time.time() - settled_since >= args.settle:
                    break
                if time.time() - last_end > 300:
                    break
        events = controller.events(1000)
    finally:
        os.killpg(up.pid, signal.SIGINT)
        try:
            up.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(up.pid, signal.SIGKILL)

    # The simulated run goes on until its cluster settles; compare the same span: up to the live run's length.
    sim_nodes = [s["provisioned"] for s in simulated["timeline"]]
    span = min(len(sim_nodes), seconds)
    result = {
        "trace": trace.get("name"), "speed": args.speed, "throughput_scale": bw_scale, "capacity_scale": cap_scale,
        "node_bandwidth": args.node_bandwidth, "node_capacity": args.node_capacity,
        "live_seconds": seconds, "live_node_seconds": node_seconds,
        "simulated_seconds": simulated["seconds"], "simulated_node_seconds": simulated["node_seconds"],
        "simulated_node_seconds_same_span": sum(sim_nodes[:span]) + max(0, seconds - span) * min_nodes,
        "simulated_oracle_node_seconds": simulated["oracle_node_seconds"], "simulated_short_seconds": simulated["short_seconds"],
        "live_bytes_asked": stats["asked"], "live_bytes_moved": stats["moved"],
        "live_peak_nodes": max(timeline), "simulated_peak_nodes": max(sim_nodes),
        "job_errors": [j.error for j in jobs if j.error],
        "events": [e for e in events if e.get("kind") in ("scale-up", "node-started", "scale-down", "node-stopped", "scale-failed")],
        "live_timeline": timeline,
    }
    if args.json:
        print(json.dumps(result, indent=1))
        return
    print("trace %s, time / %.3g, throughput / %.4g (nodes told %s), bytes / %.4g (nodes of %s)" % (
        result["trace"], args.speed, bw_scale, args.node_bandwidth, cap_scale, args.node_capacity))
    print("live:      %d s, %.0f node-seconds, peak %d nodes" % (seconds, node_seconds, result["live_peak_nodes"]))
    print("simulated: %d s, %.0f node-seconds (%.0f over the live run's %d s), peak %d nodes, oracle %.0f, short %d s" % (
        simulated["seconds"], simulated["node_seconds"], result["simulated_node_seconds_same_span"], seconds,
        result["simulated_peak_nodes"], simulated["oracle_node_seconds"], simulated["short_seconds"]))
    print("live / simulated node-seconds (same span): %.3f" % (node_seconds / result["simulated_node_seconds_same_span"]))
    print("throughput the jobs drove: %.1f of %.1f MB asked (%.0f %%)" % (
        stats["moved"] / 1e6, stats["asked"] / 1e6, 100 * stats["moved"] / max(1.0, stats["asked"])))
    for e in result["events"]:
        print("  %s %-12s %s %s" % (e.get("time", ""), e.get("kind"), e.get("node") or "", e.get("reason", "")))
    for err in result["job_errors"]:
        print("job error: " + err)
    print("live nodes per second: " + " ".join(str(n) for n in timeline))


if __name__ == "__main__":
    main()
