"""One TCP connection to a Pocket server, shared by every thread of a client.

Requests are pipelined: any number of threads send on the connection (a lock keeps frames whole) and wait for
their replies, matched by request id. There is no reader thread. A waiting caller that finds nobody reading
becomes the reader: it reads replies, hands each to its waiter, and reads until its own has come; then it passes
the reading on to another waiter, if any. So a lone caller reads its own reply on its own thread (no thread
switch on the path of a small request), and concurrent callers share one socket.
"""

import socket
import threading
import time

from . import _wire as w
from .errors import ConnectionLost, from_status

_HEADER = w.HEADER
_IDLE_CHECK_SECONDS = 1.0


class _Pending:
    __slots__ = ("into", "done", "status", "body", "length", "error", "event")

    def __init__(self, into):
        self.into = into        # a writable memoryview the body of an OK reply is read into, or None
        self.done = False
        self.status = 0
        self.body = None
        self.length = 0
        self.error = None
        self.event = None


class Connection:
    def __init__(self, host, port, connect_timeout=5.0, timeout=None):
        self.address = "%s:%d" % (host, port)
        try:
            sock = socket.create_connection((host, port), timeout=connect_timeout)
        except OSError as e:
            raise ConnectionLost("cannot connect to %s: %s" % (self.address, e)) from e
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        # Blocking without a timeout by default: a socket with a timeout polls before every read.
        sock.settimeout(timeout)
        self._timeout = timeout
        self._sock = sock
        self._send_lock = threading.Lock()
        self._lock = threading.Lock()
        self._pending = {}
        self._next_id = 0
        self._reading = False
        self._broken = None
        self._last_used = time.monotonic()
        self._header = bytearray(w.HEADER_SIZE)
        self._header_view = memoryview(self._header)

    @property
    def is_connected(self):
        return self._broken is None

    def close(self):
        with self._lock:
            if self._broken is None:
                self._broken = "closed by the client"
        try:
            self._sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._sock.close()
        self._fail_all(ConnectionLost("connection to %s closed" % self.address))

    def _closed_by_peer(self):
        """True when the server has closed this idle connection (it closes connections idle for minutes)."""
        try:
            self._sock.setblocking(False)
            try:
                return self._sock.recv(1, socket.MSG_PEEK) == b""
            finally:
                self._sock.settimeout(self._timeout)
        except (BlockingIOError, InterruptedError):
            return False
        except OSError:
            return True

    def call(self, opcode, flags, token, parts, into=None):
        """Sends one request (header + parts) and returns (status, body, length) of its reply.

        ``into``: a writable memoryview; an OK reply's body that fits is read straight into it (then body is
        None and length says how much was read). Raises ConnectionLost if the connection fails first; the
        caller may retry on a new connection when ``e.not_sent``.
        """
        if self._broken is not None:
            e = ConnectionLost("connection to %s is closed (%s)" % (self.address, self._broken))
            e.not_sent = True
            raise e
        p = _Pending(into)
        length = 0
        for part in parts:
            length += len(part)
        with self._lock:
            # Only while nobody reads: a reader may still be taking in the body of a reply it has already
            # popped from _pending, and the check switches the socket to non-blocking under it.
            if not self._pending and not self._reading and time.monotonic() - self._last_used > _IDLE_CHECK_SECONDS:
                if self._closed_by_peer():
                    self._broken = "closed by the server while idle"
                    e = ConnectionLost("connection to %s was closed by the server while idle" % self.address)
                    e.not_sent = True
                    raise e
            self._next_id = (self._next_id + 1) & 0xFFFFFFFF
            rid = self._next_id
            self._pending[rid] = p
        header = _HEADER.pack(w.VERSION, opcode, flags, 0, 0, length, rid, token)
        sent_any = False
        try:
            with self._send_lock:
                buffers = [header]
                buffers.extend(parts)
                total = w.HEADER_SIZE + length
                sent = self._sock.sendmsg(buffers)
                sent_any = True
                while sent < total:
                    buffers = _advance(buffers, sent)
                    total -= sent
                    sent = self._sock.sendmsg(buffers)
        except OSError as e:
            with self._lock:
                self._pending.pop(rid, None)
            self._break("send failed: %s" % e)
            err = ConnectionLost("sending to %s failed: %s" % (self.address, e))
            err.not_sent = not sent_any
            raise err from e
        return self._wait(p)

    def _wait(self, p):
        while True:
            with self._lock:
                if p.done:
                    break
                if self._reading:
                    if p.event is None:
                        p.event = threading.Event()
                    event = p.event
                    lead = False
                else:
                    self._reading = True
                    lead = True
            if not lead:
                event.wait()
                with self._lock:
                    event.clear()
                continue
            try:
                while not p.done:
                    self._read_one()
            except OSError as e:
                self._break("read failed: %s" % e)
            except ConnectionLost as e:
                self._break(str(e))
            finally:
                with self._lock:
                    self._reading = False
                    # Hand the reading on to a caller still waiting.
                    # (A caller not yet waiting finds nobody reading and reads itself.)
                    for other in self._pending.values():
                        if other.event is not None:
                            other.event.set()
                            break
            break
        self._last_used = time.monotonic()
        if p.error is not None:
            raise p.error
        return p.status, p.body, p.length

    def _recv_exact(self, view):
        n = len(view)
        got = 0
        sock = self._sock
        while got < n:
            r = sock.recv_into(view[got:], n - got)
            if r == 0:
                raise ConnectionLost("%s closed the connection" % self.address)
            got += r

    def _read_one(self):
        self._recv_exact(self._header_view)
        version, opcode, flags, status, _, length, rid, _ = _HEADER.unpack(self._header)
        if version != w.VERSION or not (flags & w.REPLY) or length < 0:
            raise ConnectionLost("%s sent a frame that is not a version 1 reply" % self.address)
        with self._lock:
            p = self._pending.pop(rid, None)
        if p is None:
            # A reply nobody waits for (it cannot happen unless the server misbehaves): skip its body.
            if length:
                self._recv_exact(memoryview(bytearray(length)))
            return
        if status == w.OK and p.into is not None and length <= len(p.into):
            if length:
                self._recv_exact(p.into[:length])
            p.length = length
        else:
            body = bytearray(length)
            if length:
                self._recv_exact(memoryview(body))
            p.body = body
            p.length = length
        p.status = status
        with self._lock:
            p.done = True
            if p.event is not None:
                p.event.set()

    def _break(self, reason):
        with self._lock:
            if self._broken is None:
                self._broken = reason
        try:
            self._sock.close()
        except OSError:
            pass
        self._fail_all(ConnectionLost("connection to %s lost: %s" % (self.address, reason)))

    def _fail_all(self, error):
        with self._lock:
            pending = list(self._pending.values())
            self._pending.clear()
            for p in pending:
                p.error = error
                p.done = True
                if p.event is not None:
                    p.event.set()


def _advance(buffers, sent):
    """The buffers left after ``sent`` bytes went out, as memoryviews (no copies)."""
    out = []
    for b in buffers:
        n = len(b)
        if sent >= n:
            sent -= n
            continue
        out.append(memoryview(b)[sent:] if sent else b)
        sent = 0
    return out


def check(status, body, message_prefix=""):
    """Raises the typed exception for a non-OK reply."""
    if status != w.OK:
        text = bytes(body).decode("utf-8", "replace") if body else "status %d" % status
        raise from_status(status, message_prefix + text)
