"""The data path: a Client holds one connection per server; a Job reads and writes under a job's token."""

import collections
import concurrent.futures
import io
import os
import threading
import time

from . import _config
from . import _memory
from . import _wire as w
from ._connection import Connection, check
from .errors import (BadRequest, CapacityExceeded, ConnectionLost, InternalError, NodeLost, NotFound, PocketError,
                     QuotaExceeded)

NodeInfo = collections.namedtuple(
    "NodeInfo", "id tier state host port capacity used cpu rx_bytes_per_second tx_bytes_per_second")
NodeInfo.address = property(lambda n: "%s:%d" % (n.host, n.port))

# Where a node listens, as a Create or Get reply names it (asked with NODE_ADDRESSES).
_NodeAddress = collections.namedtuple("_NodeAddress", "id host port")
_NodeAddress.address = property(lambda n: "%s:%d" % (n.host, n.port))
BlockInfo = collections.namedtuple("BlockInfo", "node_id node_state offset length")
ObjectInfo = collections.namedtuple("ObjectInfo", "key size inline blocks")
ListEntry = collections.namedtuple("ListEntry", "key size is_prefix")
ListPage = collections.namedtuple("ListPage", "entries next_start_after")
ListPage.has_more = property(lambda p: p.next_start_after != "")
JobUsage = collections.namedtuple("JobUsage", "job_id objects block_bytes inline_bytes requests tier bytes_by_tier "
                                               "key_bytes quota", defaults=(0, None))
# A job's limits (0: none of that kind), as JobUsage.quota reports them.
JobQuota = collections.namedtuple("JobQuota", "max_bytes max_objects max_key_bytes")

_Extent = collections.namedtuple("_Extent", "grant node_id length object_offset")

DEFAULT_SMALL_OBJECT_THRESHOLD = 64 << 10
DEFAULT_PARALLEL_TRANSFERS = 8
_STREAM_BATCH = 16 << 20
_MIN_STREAM_BATCH = 64 << 10
_MAX_PAGE = 10000


class Client:
    """Connections to one metadata server and to the storage nodes it names. Thread-safe; keep one per process.

    ``metadata``: "host:port" (default: $POCKET_METADATA, else the cluster `pocket up` runs).
    ``timeout``: seconds a request may wait for its reply (None: no limit); ``connect_timeout`` for connecting.
    Objects up to ``small_object_threshold`` bytes travel inline through the metadata server in one round trip;
    larger ones are striped over storage nodes with ``max_parallel_transfers`` extents in flight.
    """

    def __init__(self, metadata=None, connect_timeout=5.0, timeout=None,
                 small_object_threshold=DEFAULT_SMALL_OBJECT_THRESHOLD,
                 max_parallel_transfers=DEFAULT_PARALLEL_TRANSFERS, job_lost_wait=20.0):
        metadata = metadata or _config.metadata_address()
        if not metadata:
            raise ValueError("no metadata server: pass one, or set $%s" % _config.METADATA_VARIABLE)
        self.metadata = metadata
        self._host, self._port = _config.split_address(metadata)
        self.connect_timeout = connect_timeout
        self.timeout = timeout
        self.small_object_threshold = min(small_object_threshold, w.MAX_SMALL_OBJECT)
        self.max_parallel_transfers = max(1, max_parallel_transfers)
        # How long a job's request whose metadata connection failed reconnects to learn the job's fate (JobLost).
        self.job_lost_wait = job_lost_wait
        self._lock = threading.Lock()
        self._meta = None
        self._node_conns = {}
        self._nodes = {}
        self.node_listings = 0  # ListNodes requests sent (tests: a fresh client's first put and get need none)
        self._pool = None
        self._closed = False

    def job(self, job_id, token):
        """The job ``job_id`` under its ``token`` (32 hex digits), on this client's connections."""
        return Job(self, job_id, token)

    def close(self):
        """Closes every connection (an unfinished put of another thread is aborted by the server)."""
        with self._lock:
            self._closed = True
            conns = [self._meta] + list(self._node_conns.values())
            self._meta = None
            self._node_conns.clear()
            pool, self._pool = self._pool, None
        for c in conns:
            if c is not None:
                c.close()
        if pool is not None:
            pool.shutdown(wait=False)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- connections

    def _metadata_connection(self):
        """The metadata connection, replaced when it is no longer connected. A request that failed unsent
        (``not_sent``) always left its connection disconnected, so a retry gets a new one here; a connection that
        another thread has just made is never replaced under it."""
        c = self._meta
        if c is not None and c.is_connected:
            return c
        with self._lock:
            if self._closed:
                raise PocketError("the client is closed")
            c = self._meta
            if c is None or not c.is_connected:
                if c is not None:
                    c.close()
                c = Connection(self._host, self._port, self.connect_timeout, self.timeout)
                self._meta = c
            return c

    def _meta_call(self, opcode, flags, token, parts, into=None, job_id=None):
        """A metadata request; a non-OK reply raises its typed exception. A job's request (``job_id``) whose
        connection fails asks what became of the job once a server answers again (``_job_fate``)."""
        try:
            try:
                status, body, length = self._metadata_connection().call(opcode, flags, token, parts, into)
            except ConnectionLost as e:
                if not getattr(e, "not_sent", False):
                    raise
                # The server closed an idle connection before the request went out: connect again, once.
                status, body, length = self._metadata_connection().call(opcode, flags, token, parts, into)
        except ConnectionLost as e:
            lost = ConnectionLost("metadata server %s unreachable: %s" % (self.metadata, e))
            if job_id is None or not self.job_lost_wait or self.job_lost_wait <= 0:
                raise lost from e
            raise self._job_fate(job_id, token, lost) from e
        if status != w.OK:
            check(status, body)
        return body, length

    def _job_fate(self, job_id, token, lost):
        """After a job's request lost the metadata connection: reconnects for up to ``job_lost_wait`` seconds (the
        controller starts a lost server's replacement at its address within seconds) and asks about the job. JobLost
        (or any refusal) is returned as its exception; a server that still knows the job, or none in time, ``lost``."""
        deadline = time.monotonic() + self.job_lost_wait
        while True:
            try:
                status, body, _ = self._metadata_connection().call(w.JOB_STATS, 0, token, (w.s(""),))
                if status == w.OK:
                    return lost
                try:
                    check(status, body)
                except PocketError as refused:
                    return refused
                return lost
            except ConnectionLost:
                if time.monotonic() >= deadline:
                    return ConnectionLost("%s (job %s: no metadata server answered at %s within %.0f s)"
                                          % (lost, job_id, self.metadata, self.job_lost_wait))
            time.sleep(0.25)

    def list_nodes(self, token):
        """Every storage node the metadata server knows (asked with a job token or the cluster token)."""
        body, _ = self._meta_call(w.LIST_NODES, 0, token, ())
        r = w.Reader(body)
        nodes = []
        for _ in range(r.u32()):
            nodes.append(NodeInfo(r.u32(), w.TIERS.get(r.u8(), "?"), w.NODE_STATES.get(r.u8(), "?"), r.str(), r.u16(),
                                  r.i64(), r.i64(), r.f64(), r.f64(), r.f64()))
        self._nodes = {n.id: n for n in nodes}
        self.node_listings += 1
        return nodes

    def _node_addresses_flag(self):
        """Asks a Create or Get for its nodes' addresses while this client knows none: a fresh function's first
        put or get of a large object then needs no ListNodes round trip (older servers ignore the flag)."""
        return 0 if self._nodes else w.NODE_ADDRESSES

    def _learn_nodes(self, r):
        """Reads the node addresses a Create or Get reply may end with (count u16, then id u32, host str, port u16)."""
        if r.remaining == 0:
            return
        try:
            known = dict(self._nodes)
            for _ in range(r.u16()):
                node = _NodeAddress(r.u32(), r.str(), r.u16())
                known[node.id] = node
        except Exception as e:
            raise BadRequest("malformed node addresses from the metadata server") from e
        if r.remaining:
            raise BadRequest("malformed node addresses from the metadata server: %d bytes left over" % r.remaining)
        self._nodes = known

    def _node_connection(self, node_id, key, token):
        c = self._node_conns.get(node_id)
        if c is not None and c.is_connected:
            return c
        node = self._nodes.get(node_id)
        if node is None:
            self.list_nodes(token)
            node = self._nodes.get(node_id)
            if node is None:
                raise NodeLost("object '%s' lost: storage node %d is unknown to the metadata server" % (key, node_id))
        with self._lock:
            if self._closed:
                raise PocketError("the client is closed")
            c = self._node_conns.get(node_id)
            if c is None or not c.is_connected:
                if c is not None:
                    c.close()
                try:
                    c = Connection(node.host, node.port, self.connect_timeout, self.timeout)
                except ConnectionLost as e:
                    raise NodeLost("object '%s' lost: storage node %d (%s) unreachable: %s"
                                   % (key, node_id, node.address, e)) from e
                self._node_conns[node_id] = c
            return c

    def _node_call(self, node_id, key, token, opcode, parts, into=None):
        c = self._node_connection(node_id, key, token)
        try:
            try:
                return c.call(opcode, 0, token, parts, into)
            except ConnectionLost as e:
                if not getattr(e, "not_sent", False):
                    raise
                c = self._node_connection(node_id, key, token)
                return c.call(opcode, 0, token, parts, into)
        except ConnectionLost as e:
            raise NodeLost("object '%s' lost: storage node %d (%s) failed: %s" % (key, node_id, c.address, e)) from e

    def _executor(self):
        pool = self._pool
        if pool is None:
            with self._lock:
                if self._pool is None:
                    self._pool = concurrent.futures.ThreadPoolExecutor(
                        max_workers=self.max_parallel_transfers, thread_name_prefix="pocket-transfer")
                pool = self._pool
        return pool


class Job:
    """A job's view of Pocket: every operation runs under the job's token, with keys relative to the job.

    Thread-safe. Made by ``Controller.register_job`` (the driver) or ``Job.open`` (a function handed the job id,
    token and metadata address by its driver).
    """

    def __init__(self, client, job_id, token, owns_client=False, registration=None, controller=None):
        self.client = client
        self.id = job_id
        self.token = token if isinstance(token, str) else bytes(token).hex()
        self._token = w.token_bytes(token)
        self._owns_client = owns_client
        self.registration = registration or {}
        self._controller = controller

    @classmethod
    def open(cls, job_id, token=None, metadata=None, **client_options):
        """Opens a job another process registered. ``token`` defaults to $POCKET_JOB_TOKEN, ``metadata`` to
        $POCKET_METADATA (else what `pocket job register` stored in $POCKET_HOME/jobs.json, else `pocket up`'s)."""
        if token is None:
            token = _config.job_token(job_id)
            if not token:
                raise ValueError("no token for job %r: pass one or set $%s" % (job_id, _config.JOB_TOKEN_VARIABLE))
        if metadata is None:
            metadata = (os.environ.get(_config.METADATA_VARIABLE)
                        or (_config.job_from_home(job_id) or {}).get("metadata") or _config.metadata_address())
        return cls(Client(metadata, **client_options), job_id, token, owns_client=True)

    @property
    def tier(self):
        return self.registration.get("tier")

    @property
    def metadata(self):
        return self.client.metadata

    def close(self):
        """Closes the job's connections if it opened them (the job itself lives on until deregistered)."""
        if self._owns_client:
            self.client.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self):
        return "Job(%r, metadata=%r)" % (self.id, self.client.metadata)

    def deregister(self):
        """Ends the job through the controller that registered it: every byte it holds is freed at once."""
        if self._controller is None:
            raise PocketError("job %s was not registered through a controller here; use Controller.deregister" % self.id)
        return self._controller.deregister(self.id)

    # -- put

    def put(self, key, data, keep_after_job=False):
        """Stores ``data`` under ``key``: bytes, bytearray, memoryview (any contiguous buffer), a file object
        opened for binary reading, or a path (str or os.PathLike). Objects are write-once: an existing key raises
        Exists. Buffers are sent without copies; files and streams with bounded memory. Returns the size stored."""
        flags = w.KEEP_AFTER_JOB if keep_after_job else 0
        if isinstance(data, (str, os.PathLike)):
            with open(data, "rb", buffering=0) as f:
                return self._put_stream(key, f, flags)
        try:
            mv = memoryview(data)
        except TypeError:
            if hasattr(data, "readinto") or hasattr(data, "read"):
                return self._put_stream(key, data, flags)
            raise TypeError("put takes bytes-like data, a binary file object or a path, not %s"
                            % type(data).__name__) from None
        if not mv.c_contiguous:
            raise BadRequest("put needs a contiguous buffer")
        if mv.format != "B" or mv.ndim != 1:
            mv = mv.cast("B")
        return self._put_buffer(key, mv, flags)

    def _put_buffer(self, key, mv, flags):
        n = len(mv)
        if n <= self.client.small_object_threshold:
            try:
                self.client._meta_call(w.PUT_SMALL, flags, self._token, (w.s(key) + w.u32(n), mv), job_id=self.id)
                return n
            except CapacityExceeded as e:
                if e.status != w.CAPACITY_EXCEEDED:
                    raise
                # The metadata server's inline store is full: storage nodes take it.
        handle, extents = self._create(key, n, flags)
        try:
            self._parallel([(self._write_extent, (key, e, mv[e.object_offset:e.object_offset + e.length]))
                            for e in extents])
            self._commit(handle, n)
        except BaseException:
            self._abort_quietly(handle)
            raise
        return n

    def _put_stream(self, key, f, flags):
        size = _remaining_size(f)
        threshold = self.client.small_object_threshold
        if size is not None and size <= threshold:
            data = _read_up_to(f, size)
            return self._put_buffer(key, memoryview(data), flags)
        handle, extents = self._create(key, -1 if size is None else size, flags)
        window = self.client.max_parallel_transfers
        free = collections.deque()
        in_flight = collections.deque()
        total = 0
        allocated = extents[-1].object_offset + extents[-1].length if extents else 0
        batch = _STREAM_BATCH
        index = 0
        lookahead = None
        pool = self.client._executor()
        try:
            while True:
                if index == len(extents):
                    if size is not None and total >= size:
                        break
                    # Granted space is full: ask for more only if the stream has more, so a stream that ends
                    # exactly here still fits a cluster with no room to spare.
                    lookahead = _read_up_to(f, 1)
                    if not lookahead:
                        break
                    while True:
                        try:
                            more = self._allocate(handle, batch, allocated)
                            break
                        except (CapacityExceeded, QuotaExceeded) as e:
                            # A stream's length is unknown: a smaller batch may still fit the cluster or the job's quota.
                            if e.status not in (w.CAPACITY_EXCEEDED, w.QUOTA_EXCEEDED) or batch <= _MIN_STREAM_BATCH:
                                raise
                            batch = max(_MIN_STREAM_BATCH, batch // 2)
                    extents.extend(more)
                    allocated += batch
                extent = extents[index]
                index += 1
                # Bounded memory: at most `window` buffers exist; wait for the oldest write to free one.
                while len(in_flight) >= window:
                    fut, buf = in_flight.popleft()
                    fut.result()
                    free.append(buf)
                buf = free.pop() if free else None
                if buf is None or len(buf) < extent.length:
                    buf = bytearray(extent.length)
                view = memoryview(buf)
                start = 0
                if lookahead:
                    view[0:1] = lookahead
                    start = 1
                    lookahead = None
                filled = start + _readinto_full(f, view[start:extent.length])
                total += filled
                if filled == 0:
                    free.append(buf)
                    break
                in_flight.append((pool.submit(self._write_extent, key, extent, view[:filled]), buf))
                if filled < extent.length:
                    break
            while in_flight:
                fut, _ = in_flight.popleft()
                fut.result()
            self._commit(handle, total)
        except BaseException:
            for fut, _ in in_flight:
                try:
                    fut.result()
                except BaseException:
                    pass
            self._abort_quietly(handle)
            raise
        return total

    def _create(self, key, size, flags):
        flags |= self.client._node_addresses_flag()
        body, _ = self.client._meta_call(w.CREATE, flags, self._token, (w.s(key) + w.i64(size),), job_id=self.id)
        r = w.Reader(body)
        handle = r.u64()
        extents = _grants(r, 0)
        self.client._learn_nodes(r)
        return handle, extents

    def _allocate(self, handle, n, object_offset):
        body, _ = self.client._meta_call(w.ALLOCATE, 0, self._token, (w.u64(handle) + w.i64(n),), job_id=self.id)
        return _grants(w.Reader(body), object_offset)

    def _commit(self, handle, size):
        self.client._meta_call(w.COMMIT, 0, self._token, (w.u64(handle) + w.i64(size),), job_id=self.id)

    def _abort_quietly(self, handle):
        try:
            self.client._meta_call(w.ABORT, 0, self._token, (w.u64(handle),), job_id=self.id)
        except (PocketError, OSError):
            pass  # the server also drops a connection's open writes when the connection ends

    def _write_extent(self, key, extent, data):
        status, body, _ = self.client._node_call(extent.node_id, key, self._token, w.WRITE_EXTENT,
                                                 (extent.grant + w.i32(0), data))
        if status != w.OK:
            check(status, body, "writing '%s' to node %d: " % (key, extent.node_id))

    def _read_extent(self, key, extent, within, into):
        n = len(into)
        status, body, length = self.client._node_call(extent.node_id, key, self._token, w.READ_EXTENT,
                                                      (extent.grant + w.i32(within) + w.i32(n),), into)
        if status != w.OK:
            # A stale grant means the object was deleted (and its space reused) while we read.
            check(w.NOT_FOUND if status == w.STALE_GRANT else status, body,
                  "reading '%s' from node %d: " % (key, extent.node_id))
        if length != n:
            raise InternalError("reading '%s' from node %d: expected %d bytes, got %d"
                                % (key, extent.node_id, n, length))

    def _parallel(self, calls):
        if len(calls) == 1:
            fn, args = calls[0]
            fn(*args)
            return
        pool = self.client._executor()
        futures = [pool.submit(fn, *args) for fn, args in calls]
        error = None
        for fut in futures:
            try:
                fut.result()
            except BaseException as e:  # wait for every transfer before the buffer goes back to the caller
                if error is None:
                    error = e
        if error is not None:
            raise error

    # -- get

    def _get_layout(self, key, offset, length, delete_after_read):
        flags = (w.DELETE_AFTER_READ if delete_after_read else 0) | self.client._node_addresses_flag()
        body, _ = self.client._meta_call(w.GET, flags, self._token, (w.s(key) + w.i64(offset) + w.i64(length),), job_id=self.id)
        r = w.Reader(body)
        kind = r.u8()
        size = r.i64()
        if kind == 0:
            return size, memoryview(body)[9:], None, 0
        release = r.u64()
        extents = _grants(r, 0)
        self.client._learn_nodes(r)
        return size, None, extents, release

    def _release(self, release):
        if release:
            self._abort_quietly(release)

    def get(self, key, offset=0, length=-1, delete_after_read=False):
        """The object's bytes (from ``offset``, ``length`` bytes; -1: to the end). With ``delete_after_read`` the
        object leaves the job as it is read (only one reader gets it). Returns bytes for objects held inline
        (small) and a bytearray for striped ones (filled in place, never copied)."""
        size, inline, extents, release = self._get_layout(key, offset, length, delete_after_read)
        if inline is not None:
            return inline.tobytes()
        try:
            end = size if length < 0 else offset + length
            buf = _memory.receive_buffer(end - offset)  # not zero-filled: _read_range writes every byte
            self._read_range(key, extents, offset, memoryview(buf))
            return buf
        finally:
            self._release(release)

    def get_into(self, key, buffer, offset=0, delete_after_read=False):
        """Reads the object from ``offset`` into ``buffer`` (any writable buffer) until the buffer is full or the
        object ends, in parallel and straight into place. Returns the number of bytes read."""
        mv = memoryview(buffer)
        if mv.format != "B" or mv.ndim != 1:
            mv = mv.cast("B")
        size, inline, extents, release = self._get_layout(key, offset, -1, delete_after_read)
        if inline is not None:
            n = min(len(mv), len(inline))
            mv[:n] = inline[:n]
            return n
        try:
            n = min(len(mv), size - offset)
            self._read_range(key, extents, offset, mv[:n])
            return n
        finally:
            self._release(release)

    def get_to(self, key, destination, offset=0, length=-1, delete_after_read=False):
        """Writes the object (or a range) to a file object opened for binary writing or to a path (replaced),
        with bounded memory. A get refused outright (no such key) leaves an existing file untouched.
        Returns the number of bytes written."""
        size, inline, extents, release = self._get_layout(key, offset, length, delete_after_read)
        try:
            if isinstance(destination, (str, os.PathLike)):
                with open(destination, "wb") as f:
                    return self._copy_to(key, size, inline, extents, offset, length, f)
            return self._copy_to(key, size, inline, extents, offset, length, destination)
        finally:
            self._release(release)

    def _copy_to(self, key, size, inline, extents, offset, length, f):
        if inline is not None:
            f.write(inline)
            return len(inline)
        end = size if length < 0 else offset + length
        pieces = list(_pieces(extents, offset, end))
        window = self.client.max_parallel_transfers
        pool = self.client._executor()
        queue = collections.deque()
        free = []
        written = 0
        nxt = 0
        try:
            while nxt < len(pieces) or queue:
                while nxt < len(pieces) and len(queue) < window:
                    extent, within, n, _ = pieces[nxt]
                    nxt += 1
                    buf = free.pop() if free else None
                    if buf is None or len(buf) < n:
                        buf = bytearray(n)
                    view = memoryview(buf)[:n]
                    queue.append((pool.submit(self._read_extent, key, extent, within, view), buf, view))
                fut, buf, view = queue.popleft()
                fut.result()
                f.write(view)
                written += len(view)
                free.append(buf)
        finally:
            for fut, _, _ in queue:
                try:
                    fut.result()
                except BaseException:
                    pass
        return written

    def _read_range(self, key, extents, offset, dest):
        if len(dest) == 0:
            return
        pieces = list(_pieces(extents, offset, offset + len(dest)))
        if sum(n for _, _, n, _ in pieces) != len(dest):
            raise InternalError("reading '%s': the metadata server's extents do not cover bytes %d-%d"
                                % (key, offset, offset + len(dest)))
        calls = [(self._read_extent, (key, extent, within, dest[obj_off - offset:obj_off - offset + n]))
                 for extent, within, n, obj_off in pieces]
        self._parallel(calls)

    # -- metadata

    def lookup(self, key):
        """Size and placement of an object (ObjectInfo), or None when it does not exist."""
        try:
            body, _ = self.client._meta_call(w.LOOKUP, 0, self._token, (w.s(key),), job_id=self.id)
        except NotFound:
            return None
        r = w.Reader(body)
        size = r.i64()
        inline = r.u8() != 0
        r.u16()
        blocks = [BlockInfo(r.u32(), w.NODE_STATES.get(r.u8(), "?"), r.i64(), r.i32()) for _ in range(r.u32())]
        return ObjectInfo(key, size, inline, blocks)

    def exists(self, key):
        return self.lookup(key) is not None

    def delete(self, key, recursive=False):
        """Deletes one object, or with ``recursive`` every object whose key starts with ``key``. Returns the number
        deleted; deleting a key that does not exist raises NotFound (a recursive delete of nothing returns 0)."""
        body, _ = self.client._meta_call(w.DELETE, w.RECURSIVE if recursive else 0, self._token, (w.s(key),), job_id=self.id)
        return w.Reader(body).i64()

    def count(self, prefix=""):
        """Number of objects whose key starts with ``prefix``."""
        body, _ = self.client._meta_call(w.COUNT, 0, self._token, (w.s(prefix),), job_id=self.id)
        return w.Reader(body).i64()

    def list_page(self, prefix="", start_after="", limit=1000, delimited=False):
        """One page (ListPage: entries, next_start_after) of up to ``limit`` keys under ``prefix`` after
        ``start_after``, in key order. With ``delimited``, keys with a further '/' fold into one "directory" entry
        (ending in '/', is_prefix True). Continue from next_start_after while has_more."""
        if not 1 <= limit <= _MAX_PAGE:
            raise ValueError("limit is 1-%d" % _MAX_PAGE)
        body, _ = self.client._meta_call(
            w.LIST, 0, self._token, (w.s(prefix) + w.s(start_after or "") + w.i32(limit) + w.u8(1 if delimited else 0),), job_id=self.id)
        r = w.Reader(body)
        entries = [ListEntry(r.str(), r.i64(), r.u8() != 0) for _ in range(r.u32())]
        return ListPage(entries, r.str())

    def list(self, prefix="", delimited=False, page_size=1000, start_after=""):
        """Iterates over the entries under ``prefix`` in key order, fetching them a page at a time."""
        nxt = start_after or ""
        while True:
            page = self.list_page(prefix, nxt, page_size, delimited)
            for entry in page.entries:
                yield entry
            if not page.has_more:
                return
            nxt = page.next_start_after

    def usage(self):
        """Objects, bytes and requests of this job (JobUsage)."""
        body, _ = self.client._meta_call(w.JOB_STATS, 0, self._token, (w.s(""),), job_id=self.id)
        r = w.Reader(body)
        job_id, objects, block_bytes, inline_bytes, requests = r.str(), r.i64(), r.i64(), r.i64(), r.i64()
        tier, by_tier = None, {}
        if r.remaining:
            tier = w.TIERS.get(r.u8())
            for i in range(1, r.u8() + 1):
                by_tier[w.TIERS.get(i, str(i))] = r.i64()
        key_bytes, quota = 0, None
        if r.remaining:
            key_bytes = r.i64()
            quota = JobQuota(r.i64(), r.i64(), r.i64())
        return JobUsage(job_id, objects, block_bytes, inline_bytes, requests, tier, by_tier, key_bytes, quota)

    def nodes(self):
        """Every storage node the metadata server knows (NodeInfo), asked with this job's token."""
        return self.client.list_nodes(self._token)


def _grants(r, object_offset):
    extents = []
    try:
        for _ in range(r.u32()):
            grant = r.raw(w.GRANT_SIZE)
            node_id, _, _, length, _, _, _ = w.GRANT.unpack(grant)
            extents.append(_Extent(grant, node_id, length, object_offset))
            object_offset += length
    except Exception as e:
        raise BadRequest("malformed extent list from the metadata server") from e
    return extents


def _pieces(extents, start, end):
    """(extent, offset inside it, length, object offset) of the parts of the extents covering [start, end)."""
    for e in extents:
        e_end = e.object_offset + e.length
        if e_end <= start or e.object_offset >= end:
            continue
        lo = max(start, e.object_offset)
        hi = min(end, e_end)
        yield e, lo - e.object_offset, hi - lo, lo


def _remaining_size(f):
    try:
        if not f.seekable():
            return None
        pos = f.tell()
        end = f.seek(0, io.SEEK_END)
        f.seek(pos)
        return end - pos
    except (AttributeError, OSError, ValueError):
        return None


def _readinto_full(f, view):
    got = 0
    n = len(view)
    readinto = getattr(f, "readinto", None)
    while got < n:
        if readinto is not None:
            r = readinto(view[got:])
        else:
            chunk = f.read(n - got)
            r = len(chunk) if chunk else 0
            if r:
                view[got:got + r] = chunk
        if not r:
            break
        got += r
    return got


def _read_up_to(f, n):
    buf = bytearray(n)
    got = _readinto_full(f, memoryview(buf))
    del buf[got:]
    return buf
