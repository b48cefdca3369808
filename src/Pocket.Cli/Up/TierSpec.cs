using System.Globalization;
using Pocket.Controller;
using Pocket.Controller.Contracts;
using Pocket.Protocol;

namespace Pocket.Cli.Up;

/// <summary>Parses the per-tier lists of `pocket up`: <c>dram=2,ssd=1,hdd=1</c> and <c>ssd=8GiB,hdd=16GiB</c>.</summary>
internal static class TierSpec
{
    /// <summary>Nodes per tier. A tier named with 0 starts no node but the controller may start nodes of it later.</summary>
    public static bool TryParseCounts(string text, out Dictionary<NodeTier, int> counts, out string error) =>
        TryParse(text, "--tiers", "a node count (0 to 64)", value => int.TryParse(value, NumberStyles.None, CultureInfo.InvariantCulture, out var n) && n <= 64 ? n : null, out counts, out error);

    /// <summary>Bytes of one node per tier.</summary>
    public static bool TryParseCapacities(string text, out Dictionary<NodeTier, long> capacities, out string error) =>
        TryParse(text, "--node-capacity", "a size such as 8GiB", value => Units.TryParseBytes(value, out var bytes) && bytes > 0 ? bytes : null, out capacities, out error);

    /// <summary>Bandwidth of one node per tier, in bits/s (<c>dram=10Gbps,hdd=400Mbps</c>).</summary>
    public static bool TryParseBandwidths(string text, out Dictionary<NodeTier, double> bandwidths, out string error) =>
        TryParse(text, "--node-bandwidth", "a bandwidth such as 8Gbps", value => Units.TryParseBitsPerSecond(value, out var bits) && bits > 0 && double.IsFinite(bits) ? bits : null, out bandwidths, out error);

    /// <summary>Cost of one node per hour per tier, in dollars (<c>dram=0.532,ssd=$0.624</c>).</summary>
    public static bool TryParseCosts(string text, out Dictionary<NodeTier, double> costs, out string error) =>
        TryParse(text, "--node-cost", "a cost per hour such as 0.532", value => double.TryParse(value.TrimStart('$'), NumberStyles.AllowDecimalPoint, CultureInfo.InvariantCulture, out var cost) && double.IsFinite(cost) ? cost : null, out costs, out error);

    private static bool TryParse<T>(string text, string option, string expected, Func<string, T?> parseValue, out Dictionary<NodeTier, T> result, out string error)
        where T : struct
    {
        result = [];
        error = string.Empty;
        var parts = text.Split(',', StringSplitOptions.TrimEntries);
        if (text.Trim().Length == 0)
        {
            error = $"{option} is empty (example: {Example(option)})";
            return false;
        }

        foreach (var part in parts)
        {
            var equals = part.IndexOf('=', StringComparison.Ordinal);
            if (equals <= 0)
            {
                error = $"{option}: '{part}' is not TIER=VALUE (example: {Example(option)})";
                return false;
            }

            var name = part[..equals].Trim();
            if (!NodeTierNames.TryParse(name, out var tier))
            {
                error = $"{option}: {NodeTierNames.Unknown(name)}";
                return false;
            }

            var valueText = part[(equals + 1)..].Trim();
            if (valueText.StartsWith('-'))
            {
                error = $"{option}: {name}={valueText} is negative; give {expected}";
                return false;
            }

            if (parseValue(valueText) is not { } value)
            {
                error = $"{option}: '{valueText}' for {name} is not {expected}";
                return false;
            }

            if (!result.TryAdd(tier, value))
            {
                error = $"{option}: {name} is given twice";
                return false;
            }
        }

        return true;
    }

    private static string Example(string option) => option switch
    {
        "--tiers" => "dram=2,ssd=1,hdd=1",
        "--node-bandwidth" => "dram=10Gbps,hdd=400Mbps",
        "--node-cost" => "dram=0.532,ssd=0.624",
        _ => "ssd=8GiB,hdd=16GiB",
    };
}
