using Pocket.Protocol;
using Pocket.Protocol.Messages;

namespace Pocket.Client;

/// <summary>Options of a put.</summary>
[Flags]
public enum PutFlags
{
    /// <summary>Nothing special.</summary>
    None = 0,

    /// <summary>The object outlives its job until its own time to live.</summary>
    KeepAfterJob = 1,
}

/// <summary>Options of a get.</summary>
[Flags]
public enum GetFlags
{
    /// <summary>Nothing special.</summary>
    None = 0,

    /// <summary>The object is deleted once read (only one reader gets it).</summary>
    DeleteAfterRead = 1,
}

/// <summary>A storage node as the metadata server sees it.</summary>
public sealed record NodeInfo(uint Id, NodeTier Tier, NodeState State, string Host, int Port, long Capacity, long Used, double Cpu, double NetRxBytesPerSecond, double NetTxBytesPerSecond)
{
    /// <summary>host:port.</summary>
    public string Address => $"{Host}:{Port}";

    /// <summary>Bytes a drain has copied off this node to other nodes so far.</summary>
    public long MovedBytes { get; init; }
}

/// <summary>One stored piece of an object.</summary>
public sealed record BlockInfo(uint NodeId, NodeState NodeState, long Offset, int Length);

/// <summary>What <see cref="PocketJob.LookupAsync"/> returns.</summary>
public sealed record ObjectInfo(string Key, long Size, bool Inline, IReadOnlyList<BlockInfo> Blocks);

/// <summary>One entry of a listing: an object, or with delimited listing a "directory" ending in '/'.</summary>
public sealed record ListEntry(string Key, long Size, bool IsPrefix);

/// <summary>Usage of a job.</summary>
public sealed record JobUsage(string JobId, long Objects, long BlockBytes, long InlineBytes, long Requests)
{
    /// <summary>The job's own tier (where its blocks go first).</summary>
    public NodeTier Tier { get; init; } = NodeTier.Dram;

    /// <summary>Bytes of the job's objects on each tier (more than one when its tier was full and data spilled).</summary>
    public IReadOnlyDictionary<NodeTier, long> BytesByTier { get; init; } = new Dictionary<NodeTier, long>();

    /// <summary>UTF-8 bytes of the job's keys, open writes included (0 from an older server).</summary>
    public long KeyBytes { get; init; }

    /// <summary>The job's limits (0: none of that kind); null from an older server.</summary>
    public JobQuota? Quota { get; init; }

    internal static JobUsage Read(byte[] body)
    {
        if (!JobStatsReply.TryRead(body, out var stats))
        {
            throw new PocketException(Status.BadRequest, "malformed job-stats reply from the metadata server");
        }

        var usage = new JobUsage(stats.JobId, stats.Objects, stats.BlockBytes, stats.InlineBytes, stats.Requests);
        if (stats.Tier is not { } tier)
        {
            return usage;
        }

        var byTier = new Dictionary<NodeTier, long>();
        for (var i = 1; i < stats.TierBytes.Length; i++)
        {
            byTier[(NodeTier)i] = stats.TierBytes[i];
        }

        return usage with { Tier = tier, BytesByTier = byTier, KeyBytes = stats.KeyBytes, Quota = stats.Quota };
    }
}
