"""Pocket client for Python: the binary protocol and the controller's HTTP API, standard library only.

    import pocket
    job = pocket.Controller().register_job("sort", functions=8)   # $POCKET_CONTROLLER, $POCKET_CLUSTER_TOKEN
    job.put("input/part-0", b"...")
    data = job.get("input/part-0")
    job.deregister()

A function handed a job by its driver: ``pocket.Job.open(job_id, token, metadata)``.
The original module's API (``register_job``, ``put_buffer``, ... returning 0/-1) is ``pocket.compat``.
"""

from .client import Client, Job, NodeInfo, ObjectInfo, BlockInfo, ListEntry, ListPage, JobUsage, JobQuota
from .controller import Controller
from .errors import *  # noqa: F401,F403
from .errors import (PocketError, NotFound, Exists, CapacityExceeded, NoNodes, NodeLost, BadRequest, UnknownOpcode,
                     FrameTooLarge, Unauthorized, VersionMismatch, StaleGrant, InternalError, InvalidKey,
                     ShuttingDown, IoError, NodeUnavailable, QuotaExceeded, JobLost, ConnectionLost, ControllerError)

__version__ = "1.0.0"
