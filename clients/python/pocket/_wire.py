"""The binary protocol's numbers and encodings (docs/protocol.md). No I/O here."""

import struct

VERSION = 1
HEADER = struct.Struct("<BBHHHiI16s")  # version, opcode, flags, status, reserved, body length, request id, token
HEADER_SIZE = 32
assert HEADER.size == HEADER_SIZE

# Opcodes (frozen numbers).
PING, REGISTER_NODE, HEARTBEAT, REGISTER_JOB, DEREGISTER_JOB, SET_WEIGHTS, LIST_NODES, JOB_STATS = 1, 2, 3, 4, 5, 6, 7, 8
DRAIN_NODE, ACTIVATE_NODE = 9, 10
PUT_SMALL, GET, CREATE, ALLOCATE, COMMIT, ABORT, LOOKUP, DELETE, LIST, COUNT = 20, 21, 22, 23, 24, 25, 26, 27, 28, 29
WRITE_EXTENT, READ_EXTENT = 40, 41

# Flags.
DELETE_AFTER_READ = 1 << 0
KEEP_AFTER_JOB = 1 << 1
RECURSIVE = 1 << 2
NODE_ADDRESSES = 1 << 3  # Create/Get: append the addresses of the grants' nodes and the job's other nodes
REPLY = 1 << 15

# Statuses (frozen numbers).
OK, NOT_FOUND, EXISTS, CAPACITY_EXCEEDED, NODE_LOST, BAD_REQUEST, UNKNOWN_OPCODE, FRAME_TOO_LARGE = 0, 1, 2, 3, 4, 5, 6, 7
UNAUTHORIZED, VERSION_MISMATCH, NO_NODES, STALE_GRANT, INTERNAL_ERROR, INVALID_KEY, SHUTTING_DOWN, IO_ERROR = \
    8, 9, 10, 11, 12, 13, 14, 15
NODE_UNAVAILABLE = 16
QUOTA_EXCEEDED = 17
JOB_LOST = 18

TIERS = {1: "dram", 2: "ssd", 3: "hdd"}
NODE_STATES = {1: "live", 2: "draining", 3: "dead", 4: "drained", 5: "standby", 6: "suspect"}

GRANT_SIZE = 48
GRANT = struct.Struct("<IIqiIq16s")  # node, generation, offset, length, rights, expires (Unix ms), mac
assert GRANT.size == GRANT_SIZE

MAX_BODY = 1 << 20             # any body but WriteExtent's
MAX_SMALL_OBJECT = 64 << 10    # the server's inline limit

_U16 = struct.Struct("<H")
_U32 = struct.Struct("<I")
_I32 = struct.Struct("<i")
_I64 = struct.Struct("<q")
_U64 = struct.Struct("<Q")
_F64 = struct.Struct("<d")
_U8 = struct.Struct("<B")


def token_bytes(token):
    """A job or cluster token as its 16 header bytes: the 32 hex digits form (as the controller shows it) or bytes."""
    if token is None:
        return bytes(16)
    if isinstance(token, (bytes, bytearray)):
        if len(token) != 16:
            raise ValueError("a token is 16 bytes")
        return bytes(token)
    text = str(token).strip()
    try:
        raw = bytes.fromhex(text)
    except ValueError:
        raw = b""
    if len(raw) != 16:
        raise ValueError("a token is 32 hex digits, got %r" % (text[:8] + "..." if len(text) > 8 else text))
    return raw


def s(text):
    """str: u16 byte count, then UTF-8."""
    data = text.encode("utf-8")
    if len(data) > 0xFFFF:
        raise ValueError("string of %d bytes is too long for the protocol" % len(data))
    return _U16.pack(len(data)) + data


def u8(v):
    return _U8.pack(v)


def u32(v):
    return _U32.pack(v)


def i32(v):
    return _I32.pack(v)


def i64(v):
    return _I64.pack(v)


def u64(v):
    return _U64.pack(v)


class Reader:
    """Reads body fields in order; a short body raises ValueError."""

    __slots__ = ("buf", "pos")

    def __init__(self, buf, pos=0):
        self.buf = buf
        self.pos = pos

    def _take(self, st):
        v = st.unpack_from(self.buf, self.pos)[0]
        self.pos += st.size
        return v

    def u8(self):
        return self._take(_U8)

    def u16(self):
        return self._take(_U16)

    def u32(self):
        return self._take(_U32)

    def i32(self):
        return self._take(_I32)

    def i64(self):
        return self._take(_I64)

    def u64(self):
        return self._take(_U64)

    def f64(self):
        return self._take(_F64)

    def str(self):
        n = self.u16()
        end = self.pos + n
        if end > len(self.buf):
            raise ValueError("string past the end of the body")
        v = bytes(self.buf[self.pos:end]).decode("utf-8")
        self.pos = end
        return v

    def raw(self, n):
        end = self.pos + n
        if end > len(self.buf):
            raise ValueError("field past the end of the body")
        v = bytes(self.buf[self.pos:end])
        self.pos = end
        return v

    @property
    def remaining(self):
        return len(self.buf) - self.pos
