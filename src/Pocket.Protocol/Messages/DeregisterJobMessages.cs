namespace Pocket.Protocol.Messages;

/// <summary>
/// DeregisterJob (cluster token): job id, then an optional reason string (older clients stop after the id). Frees
/// every byte of the job at once. The reason is what a later request carrying the job's token is told ("job ID has
/// ended: REASON"), e.g. the controller's "its lease expired at ..."; none: "it was deregistered at ...".
/// </summary>
public static class DeregisterJobRequest
{
    public static void Write(BodyWriter body, string jobId) => body.Str(jobId);

    /// <summary>The request with a reason (written only when there is one, so the body stays the older form without).</summary>
    public static void Write(BodyWriter body, string jobId, string? reason)
    {
        body.Str(jobId);
        if (!string.IsNullOrEmpty(reason))
        {
            body.Str(reason);
        }
    }

    public static bool TryRead(ReadOnlySpan<byte> body, out string jobId) => TryRead(body, out jobId, out _);

    public static bool TryRead(ReadOnlySpan<byte> body, out string jobId, out string? reason)
    {
        var reader = new BodyReader(body);
        jobId = reader.Str();
        reason = reader.Remaining > 0 && !reader.Failed ? reader.Str() : null;
        return !reader.Failed && reader.AtEnd;
    }
}

/// <summary>DeregisterJob's reply: objects i64 and bytes i64 freed.</summary>
public readonly record struct DeregisterJobReply(long Objects, long Bytes)
{
    public static void Write(BodyWriter body, in DeregisterJobReply reply) => body.I64(reply.Objects).I64(reply.Bytes);

    public static bool TryRead(ReadOnlySpan<byte> body, out DeregisterJobReply reply)
    {
        var reader = new BodyReader(body);
        reply = new DeregisterJobReply(reader.I64(), reader.I64());
        return !reader.Failed && reader.AtEnd;
    }
}
