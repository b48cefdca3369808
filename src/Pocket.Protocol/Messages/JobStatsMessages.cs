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
/// before it) tier u8, tier count u8 and that many i64 byte counts, one per tier from dram on.
/// </summary>
public readonly record struct JobStatsReply(string JobId, long Objects, long BlockBytes, long InlineBytes, long Requests)
{
    /// <summary>The job's tier; null from an older server that did not send it.</summary>
    public NodeTier? Tier { get; init; }

    /// <summary>Bytes per tier, indexed by <see cref="NodeTier"/> (index 0 unused); empty from an older server.</summary>
    public long[] TierBytes { get; init; } = [];

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
        return !reader.Failed && reader.AtEnd;
    }
}
