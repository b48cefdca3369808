namespace Pocket.Protocol.Messages;

/// <summary>DeregisterJob (cluster token): job id. Frees every byte of the job at once.</summary>
public static class DeregisterJobRequest
{
    public static void Write(BodyWriter body, string jobId) => body.Str(jobId);

    public static bool TryRead(ReadOnlySpan<byte> body, out string jobId)
    {
        var reader = new BodyReader(body);
        jobId = reader.Str();
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
