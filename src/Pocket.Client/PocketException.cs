using Pocket.Protocol;

namespace Pocket.Client;

/// <summary>A request Pocket refused or could not carry out. <see cref="Status"/> says which kind.</summary>
public class PocketException : Exception
{
    /// <summary>Creates an exception for a refused request.</summary>
    public PocketException(Status status, string message, Exception? inner = null) : base(message, inner) => Status = status;

    /// <summary>The protocol status behind the failure.</summary>
    public Status Status { get; }

    internal static PocketException From(Status status, string message) => status switch
    {
        Status.NotFound => new ObjectNotFoundException(message),
        Status.Exists => new ObjectExistsException(message),
        Status.CapacityExceeded or Status.NoNodes => new CapacityExceededException(status, message),
        Status.NodeLost => new NodeLostException(message),
        Status.NodeUnavailable => new NodeUnavailableException(message),
        Status.Unauthorized => new PocketUnauthorizedException(message),
        Status.QuotaExceeded => new QuotaExceededException(message),
        Status.JobLost => new PocketJobLostException(message),
        _ => new PocketException(status, message),
    };
}

/// <summary>The object (or job, or handle) does not exist.</summary>
public sealed class ObjectNotFoundException(string message) : PocketException(Status.NotFound, message);

/// <summary>An object with that key exists already (objects are write-once).</summary>
public sealed class ObjectExistsException(string message) : PocketException(Status.Exists, message);

/// <summary>No tier has room for the data (or no storage node is alive).</summary>
public sealed class CapacityExceededException(Status status, string message) : PocketException(status, message);

/// <summary>
/// A job's quota (bytes, objects or key bytes, set at registration) or the metadata server's bound on object memory
/// would be passed. The message names the quota, its limit and the use. Nothing was changed: the object was not
/// created and the job's other objects are intact; deleting objects makes room again.
/// </summary>
public sealed class QuotaExceededException(string message) : PocketException(Status.QuotaExceeded, message);

/// <summary>Part of the object sat on a storage node that is gone; the message names the object and the node.</summary>
public sealed class NodeLostException(string message, Exception? inner = null) : PocketException(Status.NodeLost, message, inner);

/// <summary>
/// Part of the object is on a storage node that missed its heartbeats (suspect, not dead): retry shortly. The object is
/// readable again when the node answers, or <see cref="NodeLostException"/> once the node is declared dead.
/// </summary>
public sealed class NodeUnavailableException(string message) : PocketException(Status.NodeUnavailable, message);

/// <summary>A Pocket server could not be reached (refused, reset or timed out while connecting).</summary>
public sealed class PocketUnreachableException(string message, Exception? inner = null) : PocketException(Status.InternalError, message, inner);

/// <summary>The job token is wrong, or the operation needs the cluster token.</summary>
public sealed class PocketUnauthorizedException(string message) : PocketException(Status.Unauthorized, message);

/// <summary>
/// The job's metadata server was lost (its process died), and with it the job's namespace: every object of the job is
/// gone. The message names the job and when its server was lost. Retrying does not help: register the job again.
/// </summary>
public sealed class PocketJobLostException(string message) : PocketException(Status.JobLost, message);
