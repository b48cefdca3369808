using System.Globalization;

namespace Pocket.Controller.Contracts;

/// <summary>
/// What a job tells the controller about itself when it registers, so that it gets the right tier and number of
/// nodes. Every hint is optional; null (or 0, as in the original API) means "not given", and no hints at all get the
/// controller's default allocation. The same record is what the controller sizes from and what <c>GET /v1/jobs</c>
/// shows as a job's <c>hints</c>.
/// </summary>
public sealed record JobHints
{
    /// <summary>The <c>x-pocket-hints</c> header of the S3 gateway, in the syntax <see cref="TryParse"/> reads.</summary>
    public const string HeaderName = "x-pocket-hints";

    /// <summary>Functions (lambdas, workers) of the job running at the same time.</summary>
    public int? Functions { get; init; }

    /// <summary>Peak throughput of the whole job, bits per second (wins over <see cref="Functions"/>).</summary>
    public double? PeakThroughputBitsPerSecond { get; init; }

    /// <summary>Most bytes the job stores at once.</summary>
    public long? CapacityBytes { get; init; }

    /// <summary>Whether the job waits on every small request (then it gets DRAM). Default true, as in the paper.</summary>
    public bool LatencySensitive { get; init; } = true;

    /// <summary>
    /// Limit on the bytes the job stores (blocks and inline), instead of the one sizing derives (the sized capacity plus
    /// <c>SizingOptions.QuotaAllowance</c>). Not a hint: past it, puts fail with QuotaExceeded. 0: no limit.
    /// </summary>
    public long? MaxCapacityBytes { get; init; }

    /// <summary>Limit on the job's objects, instead of the one sizing derives. 0: no limit.</summary>
    public long? MaxObjects { get; init; }

    /// <summary>Limit on the UTF-8 bytes of all the job's keys, instead of the one sizing derives. 0: no limit.</summary>
    public long? MaxKeyBytes { get; init; }

    /// <summary>
    /// How long the job may go without a request before the controller reclaims it, instead of the controller's
    /// default (5 minutes). Not a hint: every request renews it; the controller refuses leases past its maximum.
    /// </summary>
    public TimeSpan? Lease { get; init; }

    /// <summary>No hints: the job gets the default allocation.</summary>
    public static JobHints None => new();

    /// <summary>Throws <see cref="ArgumentException"/> (its ParamName the hint's field in the HTTP API) when a hint is negative or not a number.</summary>
    public void Validate()
    {
        if (Functions is < 0)
        {
            throw new ArgumentException("functions must be >= 0", "functions");
        }

        if (PeakThroughputBitsPerSecond is { } t && (!(t >= 0) || !double.IsFinite(t)))
        {
            throw new ArgumentException("peak throughput must be >= 0 bits/s", "peakThroughput");
        }

        if (CapacityBytes is < 0)
        {
            throw new ArgumentException("capacity must be >= 0 bytes", "capacity");
        }

        if (MaxCapacityBytes is < 0)
        {
            throw new ArgumentException("max capacity must be >= 0 bytes (0: no limit)", "maxCapacity");
        }

        if (MaxObjects is < 0)
        {
            throw new ArgumentException("max objects must be >= 0 (0: no limit)", "maxObjects");
        }

        if (MaxKeyBytes is < 0)
        {
            throw new ArgumentException("max key bytes must be >= 0 (0: no limit)", "maxKeyBytes");
        }

        if (Lease is { } lease && lease <= TimeSpan.Zero)
        {
            throw new ArgumentException("lease must be a positive duration (e.g. 30s, 10m, 1h)", "lease");
        }
    }

    /// <summary>
    /// Reads hints written as comma-separated name=value pairs, e.g.
    /// "functions=10,capacity=1GiB,peak-throughput=2Gbps,latency-sensitive=false,lease=1h" (the S3 gateway's
    /// <c>x-pocket-hints</c> header); units as <see cref="Units"/> reads them. Empty or null text is no hints.
    /// </summary>
    public static bool TryParse(string? text, out JobHints hints, out string error)
    {
        hints = None;
        error = string.Empty;
        if (string.IsNullOrWhiteSpace(text))
        {
            return true;
        }

        var parsed = None;
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
                    if (!int.TryParse(value, NumberStyles.None, CultureInfo.InvariantCulture, out var functions))
                    {
                        error = $"functions '{value}' is not a whole number >= 0";
                        return false;
                    }

                    parsed = parsed with { Functions = functions };
                    break;
                case "capacity":
                    if (!Units.TryParseBytes(value, out var bytes))
                    {
                        error = $"capacity '{value}' is not a capacity: give bytes, or text such as 10GiB or 512MB";
                        return false;
                    }

                    parsed = parsed with { CapacityBytes = bytes };
                    break;
                case "peak-throughput" or "throughput":
                    if (!Units.TryParseBitsPerSecond(value, out var bitsPerSecond) || !double.IsFinite(bitsPerSecond))
                    {
                        error = $"peak-throughput '{value}' is not a throughput: give bits/s, or text such as 2Gbps, 500Mb/s or 1GB/s";
                        return false;
                    }

                    parsed = parsed with { PeakThroughputBitsPerSecond = bitsPerSecond };
                    break;
                case "latency-sensitive":
                    if (!bool.TryParse(value, out var latencySensitive))
                    {
                        error = $"latency-sensitive '{value}' is not true or false";
                        return false;
                    }

                    parsed = parsed with { LatencySensitive = latencySensitive };
                    break;
                case "max-capacity" or "max-key-bytes":
                    if (!Units.TryParseBytes(value, out var limit))
                    {
                        error = $"{name} '{value}' is not a size: give bytes, or text such as 10GiB or 512MB (0: no limit)";
                        return false;
                    }

                    parsed = name == "max-capacity" ? parsed with { MaxCapacityBytes = limit } : parsed with { MaxKeyBytes = limit };
                    break;
                case "max-objects":
                    if (!long.TryParse(value, NumberStyles.None, CultureInfo.InvariantCulture, out var objects))
                    {
                        error = $"max-objects '{value}' is not a whole number >= 0 (0: no limit)";
                        return false;
                    }

                    parsed = parsed with { MaxObjects = objects };
                    break;
                case "lease":
                    if (!Units.TryParseDuration(value, out var lease) || lease <= TimeSpan.Zero)
                    {
                        error = $"lease '{value}' is not a duration: give text such as 30s, 10m or 1h";
                        return false;
                    }

                    parsed = parsed with { Lease = lease };
                    break;
                default:
                    error = $"'{name}' is not a hint (functions, capacity, peak-throughput, latency-sensitive), limit (max-capacity, max-objects, max-key-bytes) or lease";
                    return false;
            }
        }

        hints = parsed;
        return true;
    }
}
