#!/usr/bin/env python3
"""What an idle connection costs a metadata server and a storage node: RSS and threads with N idle clients.

Starts `pocket metadata` and one `pocket storage` on loopback (their own cluster token), then for each server opens
N TCP connections, each sends one Ping and reads its reply (so the server has set the connection up and read from
it), and holds them open, idle. Prints each server's RSS and thread count before, with the N connections held (after
--settle seconds) and after they closed, and the RSS growth per connection. Raises this process's open-file limit to
the hard limit first. With --tls both servers listen in TLS (a self-signed certificate made with the openssl command)
and every connection does its handshake before its Ping. --pocket runs another build (e.g. "dotnet DIR/pocket.dll").
Standard library only.

usage: bench/idle-connections.py [--connections 5000] [--settle 3] [--rounds 2] [--tls] [--pocket COMMAND]
"""

import argparse
import os
import resource
import secrets
import shlex
import socket
import ssl
import subprocess
import sys
import tempfile
import time

here = os.path.dirname(os.path.abspath(__file__))
root = os.path.dirname(here)
sys.path.insert(0, os.path.join(root, "clients", "python"))

from pocket import _wire as w  # noqa: E402


def status(pid):
    rss = threads = None
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1]) * 1024
            elif line.startswith("Threads:"):
                threads = int(line.split()[1])
    return rss, threads


def load():
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def ping(sock, request_id):
    sock.sendall(w.HEADER.pack(w.VERSION, w.PING, 0, 0, 0, 0, request_id, bytes(16)))
    need = w.HEADER_SIZE
    got = b""
    while len(got) < need:
        chunk = sock.recv(need - len(got))
        if not chunk:
            raise ConnectionError("closed before the ping reply")
        got += chunk
    _, _, _, status_, _, body, _, _ = w.HEADER.unpack(got)
    if status_ != 0 or body != 0:
        raise ConnectionError("ping answered status %d" % status_)


def start(pocket, args, env, ready):
    proc = subprocess.Popen(pocket + args + ["--stop-on-stdin-eof"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
    for line in proc.stdout:
        if line.startswith(ready):
            fields = dict(f.split("=", 1) for f in line[len(ready):].split() if "=" in f)
            return proc, fields["address"]
    sys.exit("%s did not start" % args[0])


def measure(name, pid, address, count, settle, tls):
    host, port = address.rsplit(":", 1)
    before = status(pid)
    socks = []
    started = time.monotonic()
    for i in range(count):
        s = socket.create_connection((host, int(port)))
        if tls is not None:
            s = tls.wrap_socket(s, server_hostname="localhost")
        ping(s, i + 1)
        socks.append(s)
    opened = time.monotonic() - started
    time.sleep(settle)
    held = status(pid)
    for s in socks:
        s.close()
    time.sleep(settle)
    after = status(pid)
    per = (held[0] - before[0]) / count
    print("%-8s %6d connections (opened and pinged in %.1f s): RSS %.1f -> %.1f -> %.1f MiB, %.0f bytes (%.1f KiB) "
          "per connection; threads %d -> %d -> %d; load %s"
          % (name, count, opened, before[0] / 2**20, held[0] / 2**20, after[0] / 2**20, per, per / 1024,
             before[1], held[1], after[1], load()))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, default=5000)
    parser.add_argument("--settle", type=float, default=3, help="seconds to wait before each sample")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--tls", action="store_true", help="servers and connections in TLS")
    parser.add_argument("--pocket", default=os.path.join(root, "pocket"), help="the pocket command to run")
    args = parser.parse_args()
    pocket = shlex.split(args.pocket)

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if args.connections + 100 > hard:
        sys.exit("--connections %d needs more open files than the hard limit %d" % (args.connections, hard))

    env = dict(os.environ, POCKET_CLUSTER_TOKEN=secrets.token_hex(16))
    scratch = tempfile.TemporaryDirectory()
    tls_args, tls = [], None
    if args.tls:
        cert, key = os.path.join(scratch.name, "cert.pem"), os.path.join(scratch.name, "key.pem")
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                        "-keyout", key, "-out", cert, "-days", "1", "-subj", "/CN=localhost",
                        "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"], check=True, capture_output=True)
        tls_args = ["--tls-cert", cert, "--tls-key", key, "--tls-ca", cert, "--tls-name", "localhost"]
        tls = ssl.create_default_context(cafile=cert)
    metadata, address = start(pocket, ["metadata", "--port", "0"] + tls_args, env, "POCKET-METADATA ")
    storage = None
    try:
        storage, node = start(pocket, ["storage", "--metadata", address, "--capacity", "64MiB", "--port", "0"] + tls_args,
                              env, "POCKET-NODE ")
        print("metadata %s pid %d, storage %s pid %d; load %s" % (address, metadata.pid, node, storage.pid, load()))
        for round_ in range(1, args.rounds + 1):
            print("round %d" % round_)
            measure("metadata", metadata.pid, address, args.connections, args.settle, tls)
            measure("storage", storage.pid, node, args.connections, args.settle, tls)
    finally:
        for proc in (storage, metadata):
            if proc is not None:
                proc.stdin.close()
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()
        scratch.cleanup()


if __name__ == "__main__":
    main()
