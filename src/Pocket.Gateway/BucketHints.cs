using System.Globalization;

namespace Pocket.Gateway;

/// <summary>
/// A bucket's job hints from the <c>x-pocket-hints</c> header: comma-separated name=value pairs, e.g.
/// "functions=10,capacity=1GiB,peak-throughput=2Gbps,latency-sensitive=false". Units are checked by the controller,
/// which answers mistakes with the field at fault.
/// </summary>
internal sealed record BucketHints(int? Functions, string? Capacity, string? PeakThroughput, bool? LatencySensitive)
{
    public const string HeaderName = "x-pocket-hints";

    public static BucketHints None { get; } = new(null, null, null, null);

    public static bool TryParse(string? text, out BucketHints hints, out string error)
    {
        hints = None;
        error = string.Empty;
        if (string.IsNullOrWhiteSpace(text))
        {
            return true;
        }

        int? functions = null;
        string? capacity = null;
        string? throughput = null;
        bool? latencySensitive = null;
        foreach (var pair in text.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
        {
            var eq = pair.IndexOf('=', StringComparison.Ordinal);
            if (eq <= 0 || eq == pair.Length - 1)
            {
                error = $"'{pair}' is not name=value";
                return false;
            }

            var name = pair[..eq].Trim().ToLowerInvariant();
            var value = pair[(eq + 1)..].Trim();
            switch (name)
            {
                case "functions":
                    if (!int.TryParse(value, NumberStyles.None, CultureInfo.InvariantCulture, out var f))
                    {
                        error = $"functions '{value}' is not a whole number >= 0";
                        return false;
                    }

                    functions = f;
                    break;
                case "capacity":
                    capacity = value;
                    break;
                case "peak-throughput" or "throughput":
                    throughput = value;
                    break;
                case "latency-sensitive":
                    if (!bool.TryParse(value, out var l))
                    {
                        error = $"latency-sensitive '{value}' is not true or false";
                        return false;
                    }

                    latencySensitive = l;
                    break;
                default:
                    error = $"'{name}' is not a hint (functions, capacity, peak-throughput, latency-sensitive)";
                    return false;
            }
        }

        hints = new BucketHints(functions, capacity, throughput, latencySensitive);
        return true;
    }
}
