namespace Pocket.Protocol.Messages;

/// <summary>
/// RegisterJob (cluster token): name, then optional token (all zero: the server makes one) and optional tier u8
/// (older clients stop before either). Reply: <see cref="RegisterJobReply"/>.
/// </summary>
public readonly record struct RegisterJobRequest(string Name, JobToken Token, NodeTier Tier)
{
    public static void Write(BodyWriter body, in RegisterJobRequest request) => body.Str(request.Name).Token(request.Token).U8((byte)request.Tier);

    public static bool TryRead(ReadOnlySpan<byte> body, out RegisterJobRequest request)
    {
        var reader = new BodyReader(body);
        var name = reader.Str();
        var token = reader.Remaining >= JobToken.Size ? reader.Token() : JobToken.None;
        var tier = reader.Remaining > 0 ? (NodeTier)reader.U8() : NodeTier.Dram;
        request = new RegisterJobRequest(name, token, tier);
        return !reader.Failed && reader.AtEnd;
    }
}

/// <summary>RegisterJob's reply: the job id the server gave it ("name-N"), and its token.</summary>
public readonly record struct RegisterJobReply(string JobId, JobToken Token)
{
    public static void Write(BodyWriter body, in RegisterJobReply reply) => body.Str(reply.JobId).Token(reply.Token);

    public static bool TryRead(ReadOnlySpan<byte> body, out RegisterJobReply reply)
    {
        var reader = new BodyReader(body);
        reply = new RegisterJobReply(reader.Str(), reader.Token());
        return !reader.Failed && reader.AtEnd;
    }
}
