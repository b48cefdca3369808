namespace Pocket.Protocol.Messages;

/// <summary>
/// RegisterJob (cluster token): name, then optional token (all zero: the server makes one), optional tier u8 and
/// optional weights (count u32, then (node id u32, weight f64) pairs, as in <see cref="SetWeightsRequest"/>), then an
/// optional quota (max bytes i64, max objects i64, max key bytes i64; 0: no limit). Older clients stop before any of
/// the optional fields; a writer leaves the weights out when there are none and no quota follows, so a registration
/// without weights or quota is the older form. Reply: <see cref="RegisterJobReply"/>.
/// </summary>
public readonly record struct RegisterJobRequest(string Name, JobToken Token, NodeTier Tier)
{
    /// <summary>
    /// The share of the job's new blocks each node takes (the controller's weight map), set in the same round trip as the
    /// registration. Null or empty: every node of the job's tier alike. Not checked here (see <see cref="SetWeightsRequest.FirstInvalidWeight"/>).
    /// </summary>
    public IReadOnlyDictionary<uint, double>? Weights { get; init; }

    /// <summary>The job's limits; null (an older client) leaves them to the metadata server's default.</summary>
    public JobQuota? Quota { get; init; }

    public static void Write(BodyWriter body, in RegisterJobRequest request)
    {
        body.Str(request.Name).Token(request.Token).U8((byte)request.Tier);
        if (request.Quota is { } quota)
        {
            // The quota follows the weights, so they are written (perhaps as an empty map) whenever it is.
            SetWeightsRequest.WriteWeights(body, request.Weights ?? new Dictionary<uint, double>());
            body.I64(quota.MaxBytes).I64(quota.MaxObjects).I64(quota.MaxKeyBytes);
        }
        else if (request.Weights is { Count: > 0 } weights)
        {
            SetWeightsRequest.WriteWeights(body, weights);
        }
    }

    public static bool TryRead(ReadOnlySpan<byte> body, out RegisterJobRequest request)
    {
        var reader = new BodyReader(body);
        var name = reader.Str();
        var token = reader.Remaining >= JobToken.Size ? reader.Token() : JobToken.None;
        var tier = reader.Remaining > 0 ? (NodeTier)reader.U8() : NodeTier.Dram;
        var weights = reader.Remaining > 0 && !reader.Failed ? SetWeightsRequest.ReadWeights(ref reader) : null;
        JobQuota? quota = reader.Remaining > 0 && !reader.Failed ? new JobQuota(reader.I64(), reader.I64(), reader.I64()) : null;
        request = new RegisterJobRequest(name, token, tier) { Weights = weights, Quota = quota };
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
