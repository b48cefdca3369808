namespace Pocket.Protocol.Messages;

/// <summary>JobStats: job id (empty: the header token's job).</summary>
public static class JobStatsRequest
{
    public static void Write(BodyWriter body, string jobId) => body.Str(jobId);

    public static bool TryRead(ReadOnlySpan<byte> body, out string jobId)
    {
        var reader = new BodyReader(body);
        jobId = reader.Str();
        return !reader.Failed && reader.AtEnd;
    }
}

/// <summary>
/// JobStats's reply: id, objects i64, block bytes i64, inline bytes i64, requests i64, then (older servers stop
/// before it) tier u8, tier count u8 and that many i64 byte counts, one per tier from dram on, then (older servers
/// stop before it) key bytes i64 and the job's quota (max bytes, max objects, max key bytes, i64 each; 0: no limit).
/// </summary>
public readonly record struct JobStatsReply(string JobId, long Objects, long BlockBytes, long InlineBytes, long Requests)
{
    /// <summary>The job's tier; null from an older server that did not send it.</summary>
    public NodeTier? Tier { get; init; }

    /// <summary>Bytes per tier, indexed by <see cref="NodeTier"/> (index 0 unused); empty from an older server.</summary>
    public long[] TierBytes { get; init; } = [];

    /// <summary>UTF-8 bytes of the job's keys (open writes included); 0 from an older server.</summary>
    public long KeyBytes { get; init; }

    /// <summary>The job's limits; null from an older server that did not send them.</summary>
    public JobQuota? Quota { get; init; }

    public static void Write(BodyWriter body, in JobStatsReply reply)
    {
        body.Str(reply.JobId).I64(reply.Objects).I64(reply.BlockBytes).I64(reply.InlineBytes).I64(reply.Requests);
        if (reply.Tier is { } tier)
        {
            body.U8((byte)tier).U8((byte)Math.Max(reply.TierBytes.Length - 1, 0));
            for (var i = 1; i < reply.TierBytes.Length; i++)
            {
                body.I64(reply.TierBytes[i]);
            }

            if (reply.Quota is { } quota)
            {
                body.I64(reply.KeyBytes).I64(quota.MaxBytes).I64(quota.MaxObjects).I64(quota.MaxKeyBytes);
            }
        }
    }

    public static bool TryRead(ReadOnlySpan<byte> body, out JobStatsReply reply)
    {
        var reader = new BodyReader(body);
        reply = new JobStatsReply(reader.Str(), reader.I64(), reader.I64(), reader.I64(), reader.I64());
        if (reader.Failed || reader.AtEnd)
        {
            return !reader.Failed;
        }

        var tier = (NodeTier)reader.U8();
        var count = reader.U8();
        var bytes = new long[count + 1];
        for (var i = 1; i <= count && !reader.Failed; i++)
        {
            bytes[i] = reader.I64();
        }

        reply = reply with { Tier = tier, TierBytes = bytes };
        if (!reader.Failed && !reader.AtEnd)
        {
            reply = reply with { KeyBytes = reader.I64(), Quota = new JobQuota(reader.I64(), reader.I64(), reader.I64()) };
        }

        return !reader.Failed && reader.AtEnd;
    }
}
