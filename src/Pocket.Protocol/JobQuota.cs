namespace Pocket.Protocol;

/// <summary>
/// A job's limits on the metadata server, sent with its registration (<see cref="Messages.RegisterJobRequest.Quota"/>).
/// Each is a maximum the job's use may reach; 0 means no limit of that kind. A request that would pass one fails with
/// <see cref="Status.QuotaExceeded"/> and changes nothing.
/// </summary>
/// <param name="MaxBytes">Bytes of data: blocks allocated on storage nodes (open writes included) plus inline bytes.</param>
/// <param name="MaxObjects">Objects, counting keys reserved by writes not yet committed.</param>
/// <param name="MaxKeyBytes">UTF-8 bytes of all the job's keys (objects and open writes).</param>
public readonly record struct JobQuota(long MaxBytes, long MaxObjects, long MaxKeyBytes)
{
    /// <summary>No limits: the job is bounded only by the cluster's capacity and the metadata server's object memory.</summary>
    public static JobQuota Unlimited => default;

    /// <summary>The first negative field's name, or null when all are valid.</summary>
    public string? FirstInvalid() =>
        MaxBytes < 0 ? "max bytes" : MaxObjects < 0 ? "max objects" : MaxKeyBytes < 0 ? "max key bytes" : null;
}
