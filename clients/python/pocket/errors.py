"""Exceptions of the Pocket client, one per protocol status, named like the C# client's.

Every exception carries the server's message (``str(e)``) and the protocol status (``e.status``, an int;
``None`` for failures that have no status, such as a lost connection).
"""

from . import _wire as w


class PocketError(Exception):
    """A request Pocket refused or could not carry out. ``status`` says which kind."""

    status = w.INTERNAL_ERROR

    def __init__(self, message, status=None):
        super().__init__(message)
        self.message = message
        if status is not None:
            self.status = status


class NotFound(PocketError):
    """No such object, job, node or handle."""
    status = w.NOT_FOUND


class Exists(PocketError):
    """An object with that key exists already (objects are write-once)."""
    status = w.EXISTS


class CapacityExceeded(PocketError):
    """No tier has room for the data."""
    status = w.CAPACITY_EXCEEDED


class NoNodes(CapacityExceeded):
    """No storage node is alive (a kind of CapacityExceeded, as in the C# client)."""
    status = w.NO_NODES


class NodeLost(PocketError):
    """Part of the object was on a storage node that is gone; the message names the object and the node."""
    status = w.NODE_LOST


class BadRequest(PocketError):
    """A malformed request, or a range outside the object."""
    status = w.BAD_REQUEST


class UnknownOpcode(PocketError):
    status = w.UNKNOWN_OPCODE


class FrameTooLarge(PocketError):
    """A request body over the server's limit (an inline object over 64 KiB, a WriteExtent body over 64 MiB,
    any other body over 1 MiB)."""
    status = w.FRAME_TOO_LARGE


class Unauthorized(PocketError):
    """The job token is wrong, or the operation needs the cluster token."""
    status = w.UNAUTHORIZED


class VersionMismatch(PocketError):
    status = w.VERSION_MISMATCH


class StaleGrant(PocketError):
    """The extent was freed and reused since the grant was issued."""
    status = w.STALE_GRANT


class InternalError(PocketError):
    status = w.INTERNAL_ERROR


class InvalidKey(PocketError):
    """The key breaks the key rules (empty, '.' or '..' parts, control characters, too long)."""
    status = w.INVALID_KEY


class ShuttingDown(PocketError):
    status = w.SHUTTING_DOWN


class IoError(PocketError):
    """The storage device failed this request; the node keeps serving."""
    status = w.IO_ERROR


class NodeUnavailable(PocketError):
    """Part of the object is on a storage node that missed its heartbeats (suspect, not dead): retry shortly. The
    object is readable again when the node answers, or NodeLost once the node is declared dead."""
    status = w.NODE_UNAVAILABLE


class QuotaExceeded(PocketError):
    """A job quota (bytes, objects or key bytes, set at registration) or the metadata server's bound on object memory
    would be passed; the message names the quota, its limit and the use. Nothing was changed."""
    status = w.QUOTA_EXCEEDED


class JobLost(PocketError):
    """The job's metadata server was lost (its process died), and with it every object of the job; the message names
    the job and when. Retrying does not help: register the job again."""
    status = w.JOB_LOST


class ConnectionLost(InternalError):
    """A server could not be reached, or its connection closed with requests in flight."""


class ControllerError(PocketError):
    """The controller's HTTP API refused a request: ``http_status``, and for bad input the ``field``."""
    status = None

    def __init__(self, message, http_status=None, field=None):
        super().__init__(message)
        self.http_status = http_status
        self.field = field


class ControllerBadRequest(ControllerError, BadRequest):
    pass


class ControllerUnauthorized(ControllerError, Unauthorized):
    pass


class ControllerNotFound(ControllerError, NotFound):
    pass


class ControllerCapacityExceeded(ControllerError, CapacityExceeded):
    pass


# The C# client's names, for readers of both.
PocketException = PocketError
ObjectNotFoundException = NotFound
ObjectExistsException = Exists
CapacityExceededException = CapacityExceeded
NodeLostException = NodeLost
NodeUnavailableException = NodeUnavailable
PocketUnauthorizedException = Unauthorized
QuotaExceededException = QuotaExceeded
PocketJobLostException = JobLost
PocketControllerException = ControllerError

_BY_STATUS = {cls.status: cls for cls in (
    NotFound, Exists, CapacityExceeded, NoNodes, NodeLost, BadRequest, UnknownOpcode, FrameTooLarge,
    Unauthorized, VersionMismatch, StaleGrant, InternalError, InvalidKey, ShuttingDown, IoError, NodeUnavailable,
    QuotaExceeded, JobLost)}


def from_status(status, message):
    """The exception for a reply's status, carrying the server's message."""
    cls = _BY_STATUS.get(status)
    if cls is None:
        return PocketError("status %d: %s" % (status, message), status)
    return cls(message)
