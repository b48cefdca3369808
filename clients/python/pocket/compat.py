"""The original Pocket client's API (stanford-mast/pocket, clientlib/pocket.py): same names, positional signatures
and 0/-1 returns, so code written for it runs unchanged, on Python 3.

Where the cluster is:
- ``register_job``/``deregister_job`` go to the controller at $POCKET_CONTROLLER (a URL; else the cluster `pocket
  up` runs, from $POCKET_HOME/cluster.json) with the cluster token $POCKET_CLUSTER_TOKEN (else that file's).
- ``connect(hostname, port)`` names the metadata server, as in the original.
- Data calls name the job by id. Its token is the one ``register_job`` got in this process, else
  $POCKET_JOB_TOKEN (how a driver hands a job to its functions), else what `pocket job register` stored in
  $POCKET_HOME/jobs.json.

Faults of the original that are fixed: it runs on Python 3; ``close`` closes; DELETE_AFTER_READ deletes (the
server drops the object as it is read, so only one reader gets it); ``get_buffer`` fills the caller's writable
buffer (a bytearray or memoryview; Python 3 strings are immutable); errors are reported, not swallowed: a failed
call returns -1 (or None for ``register_job``) and prints the server's message to stderr, and the exception is
kept in ``last_error``.
"""

import functools
import sys
import threading

from . import _config
from .client import Client, Job
from .controller import Controller
from .errors import PocketError

last_error = None
_jobs = {}              # job id -> (token, metadata address) of jobs registered by this process
_lock = threading.Lock()


class PocketHandle:
    """What ``connect`` returns: the connections to one metadata server (and its storage nodes)."""

    def __init__(self, hostname, port):
        self.client = Client("%s:%d" % (hostname, int(port)))
        self._jobs = {}

    def job(self, jobid):
        job = self._jobs.get(jobid)
        if job is None:
            token = _token_of(jobid)
            job = Job(self.client, jobid, token)
            self._jobs[jobid] = job
        return job

    def Close(self):
        self.client.close()
        return 0


def _token_of(jobid):
    with _lock:
        known = _jobs.get(jobid)
    if known:
        return known[0]
    token = _config.job_token(jobid)
    if token:
        return token
    raise PocketError("no token for job %r: register it in this process, or set $%s"
                      % (jobid, _config.JOB_TOKEN_VARIABLE))


def _failed(what, error):
    global last_error
    last_error = error
    print("%s failed: %s" % (what, error), file=sys.stderr)
    return -1


def _status(what, errors=(PocketError, OSError, ValueError)):
    """The original's convention for a call: what it returns (None: 0), or -1 when it raises one of ``errors``
    (the error printed and kept in ``last_error``)."""
    def wrap(call):
        @functools.wraps(call)
        def run(*args, **kwargs):
            try:
                result = call(*args, **kwargs)
            except errors as e:
                return _failed(what, e)
            return 0 if result is None else result
        return run
    return wrap


def register_job(jobname, num_lambdas=0, capacityGB=0, peakMbps=0, latency_sensitive=1):
    """Registers a job with the controller; returns its id (e.g. "sort-1"), or None on failure. Zero hints are
    not given (the controller's defaults apply)."""
    global last_error
    try:
        controller = Controller()
        job = controller.register_job(
            jobname,
            functions=int(num_lambdas) if num_lambdas else None,
            capacity=int(capacityGB * (1 << 30)) if capacityGB else None,
            throughput=int(peakMbps * 1000000) if peakMbps else None,
            latency_sensitive=bool(latency_sensitive))
        job.close()
    except (PocketError, ValueError, OSError) as e:
        last_error = e
        print("Error registering job: %s" % e, file=sys.stderr)
        return None
    with _lock:
        _jobs[job.id] = (job.token, job.metadata)
    return job.id


@_status("deregister_job")
def deregister_job(jobid):
    """Ends the job: every byte it holds is freed. 0, or -1 on failure."""
    Controller().deregister(jobid)
    with _lock:
        _jobs.pop(jobid, None)


def connect(hostname, port):
    """Connections to the metadata server at hostname:port (opened on first use); pass the result to the calls."""
    return PocketHandle(hostname, port)


@_status("PUT")
def put(pocket, src_filename, dst_filename, jobid, PERSIST_AFTER_JOB=False):
    """Stores the local file ``src_filename`` as ``dst_filename`` of the job. 0, or -1 on failure."""
    pocket.job(jobid).put(dst_filename, src_filename, keep_after_job=bool(PERSIST_AFTER_JOB))


@_status("PUT BUFFER", (PocketError, OSError, ValueError, TypeError))
def put_buffer(pocket, src, len, dst_filename, jobid, PERSIST_AFTER_JOB=False):
    """Stores the first ``len`` bytes of ``src`` (bytes, bytearray, memoryview or str) as ``dst_filename``."""
    data = src.encode("utf-8") if isinstance(src, str) else src
    view = memoryview(data).cast("B")
    if len > view.nbytes:
        raise ValueError("len %d is more than the %d bytes of src" % (len, view.nbytes))
    pocket.job(jobid).put(dst_filename, view[:len], keep_after_job=bool(PERSIST_AFTER_JOB))


@_status("GET")
def get(pocket, src_filename, dst_filename, jobid, DELETE_AFTER_READ=False):
    """Writes ``src_filename`` of the job to the local file ``dst_filename``. 0, or -1 on failure."""
    pocket.job(jobid).get_to(src_filename, dst_filename, delete_after_read=bool(DELETE_AFTER_READ))


@_status("GET BUFFER", (PocketError, OSError, ValueError, TypeError))
def get_buffer(pocket, src_filename, dst, len, jobid, DELETE_AFTER_READ=False):
    """Reads up to ``len`` bytes of ``src_filename`` into ``dst``, a writable buffer (bytearray, memoryview).
    0, or -1 on failure."""
    view = memoryview(dst).cast("B")
    if view.readonly:
        raise ValueError("dst must be writable (a bytearray or memoryview), not %s" % type(dst).__name__)
    pocket.job(jobid).get_into(src_filename, view[:len], delete_after_read=bool(DELETE_AFTER_READ))


@_status("LOOKUP")
def lookup(pocket, src_filename, jobid):
    """0 when the object (or a directory of that name) exists, else -1."""
    global last_error
    job = pocket.job(jobid)
    if job.lookup(src_filename) is not None or job.count(src_filename.rstrip("/") + "/") > 0:
        return 0
    last_error = None
    return -1


@_status("DELETE")
def delete(pocket, src_filename, jobid):
    """Deletes the object ``src_filename``, or the directory of that name with everything in it (an empty name:
    every object of the job). 0, or -1 when nothing was there or on failure."""
    job = pocket.job(jobid)
    if not src_filename:
        job.delete("", recursive=True)
        return
    deleted = job.delete(src_filename.rstrip("/") + "/", recursive=True)
    if job.lookup(src_filename) is not None:
        deleted += job.delete(src_filename)
    if deleted == 0:
        raise PocketError("'%s' not found" % src_filename)


def create_dir(pocket, src_filename, jobid):
    """Directories are implicit (keys with '/'); kept for code written for the original. Returns 0."""
    return 0


@_status("COUNT FILES")
def count_files(pocket, dirname, jobid):
    """Number of objects in the directory ``dirname`` (an empty name: the whole job), or -1 on failure."""
    prefix = dirname.rstrip("/") + "/" if dirname else ""
    return pocket.job(jobid).count(prefix)


def close(pocket):
    """Closes the handle's connections. Returns 0."""
    return pocket.Close()
