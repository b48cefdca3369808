namespace Pocket.Protocol.Messages;

/// <summary>
/// SetWeights (cluster token): job id, count u32, (node id u32, weight f64) pairs, then optional tier u8. An empty map
/// means "every node of the job's tier alike". Reply: empty.
/// </summary>
public sealed record SetWeightsRequest(string JobId, IReadOnlyDictionary<uint, double> Weights, NodeTier? Tier)
{
    private const int PairSize = sizeof(uint) + sizeof(double);

    public static void Write(BodyWriter body, string jobId, IReadOnlyDictionary<uint, double> weights, NodeTier? tier)
    {
        body.Str(jobId);
        WriteWeights(body, weights);
        if (tier is { } chosen)
        {
            body.U8((byte)chosen);
        }
    }

    /// <summary>A weight map: count u32, then (node id u32, weight f64) pairs.</summary>
    internal static void WriteWeights(BodyWriter body, IReadOnlyDictionary<uint, double> weights)
    {
        body.U32((uint)weights.Count);
        foreach (var (node, weight) in weights)
        {
            body.U32(node).F64(weight);
        }
    }

    internal static Dictionary<uint, double>? ReadWeights(ref BodyReader reader)
    {
        var count = reader.U32();
        if (reader.Failed || count > (uint)(reader.Remaining / PairSize))
        {
            reader.Bytes(-1);
            return null;
        }

        var weights = new Dictionary<uint, double>((int)count);
        for (var i = 0; i < count; i++)
        {
            var node = reader.U32();
            weights[node] = reader.F64();
        }

        return weights;
    }

    /// <summary>Decodes the body; the weights are not checked here (see <see cref="FirstInvalidWeight"/>).</summary>
    public static bool TryRead(ReadOnlySpan<byte> body, out SetWeightsRequest? request)
    {
        request = null;
        var reader = new BodyReader(body);
        var id = reader.Str();
        var weights = ReadWeights(ref reader);
        NodeTier? tier = reader.Remaining > 0 && !reader.Failed ? (NodeTier)reader.U8() : null;
        if (weights is null || reader.Failed || !reader.AtEnd)
        {
            return false;
        }

        request = new SetWeightsRequest(id, weights, tier);
        return true;
    }

    /// <summary>The first node whose weight is not a finite number &gt;= 0, if any.</summary>
    public static uint? FirstInvalidWeight(IReadOnlyDictionary<uint, double> weights)
    {
        foreach (var (node, weight) in weights)
        {
            if (!(weight >= 0) || double.IsInfinity(weight))
            {
                return node;
            }
        }

        return null;
    }
}
