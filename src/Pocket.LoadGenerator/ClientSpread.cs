namespace Pocket.LoadGenerator;

/// <summary>
/// How evenly a run served its clients: the fewest, median and most operations one client completed, and the fewest as
/// a share of the mean. With one request outstanding per connection a fan-in's p99 can come from some connections
/// starving while others run (a share well below 1), or from every connection waiting now and then (near 1).
/// </summary>
internal sealed record ClientSpread(long Min, long Median, long Max, double SlowestOfMean)
{
    /// <summary>The spread of two or more clients' counts; null for one client or none (nothing to compare).</summary>
    public static ClientSpread? Of(IReadOnlyList<long> clientOps)
    {
        if (clientOps.Count < 2)
        {
            return null;
        }

        var sorted = clientOps.Order().ToArray();
        var mean = sorted.Average();
        return new ClientSpread(sorted[0], sorted[sorted.Length / 2], sorted[^1], mean > 0 ? sorted[0] / mean : 0);
    }
}
