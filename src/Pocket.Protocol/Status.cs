namespace Pocket.Protocol;

/// <summary>Reply status. Numbers are part of the wire format: append only, never renumber.</summary>
public enum Status : ushort
{
    Ok = 0,
    NotFound = 1,
    Exists = 2,
    CapacityExceeded = 3,
    NodeLost = 4,
    BadRequest = 5,
    UnknownOpcode = 6,
    FrameTooLarge = 7,
    Unauthorized = 8,
    VersionMismatch = 9,
    NoNodes = 10,
    StaleGrant = 11,
    InternalError = 12,
    InvalidKey = 13,
    ShuttingDown = 14,
    IoError = 15,

    /// <summary>
    /// The object's blocks are on a storage node that missed its heartbeats (suspect, not yet dead): retry shortly; it
    /// becomes readable again when the node answers, or NodeLost once the node is declared dead.
    /// </summary>
    NodeUnavailable = 16,

    /// <summary>A job's quota (bytes, objects or key bytes), or the metadata server's bound on object memory, would be passed; nothing was changed.</summary>
    QuotaExceeded = 17,

    /// <summary>
    /// The job's metadata server was lost (its process died): the job's namespace, and so its objects, are gone. The
    /// job must be registered again; retrying will not help.
    /// </summary>
    JobLost = 18,
}
