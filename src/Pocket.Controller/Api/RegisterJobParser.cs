using System.Text.Json;
using Pocket.Client;
using Pocket.Controller.Contracts;
using Pocket.Controller.Sizing;

namespace Pocket.Controller.Api;

/// <summary>Reads <c>POST /v1/jobs</c> bodies by hand, so every mistake is answered with the field it is in.</summary>
internal static class RegisterJobParser
{
    public static bool TryParse(JsonElement root, out string name, out JobHints hints, out ErrorResponse? error)
    {
        name = string.Empty;
        hints = JobHints.None;
        error = null;
        if (root.ValueKind != JsonValueKind.Object)
        {
            error = Fail("body", "must be a JSON object such as {\"name\":\"sort\"}");
            return false;
        }

        string? jobName = null;
        int? functions = null;
        double? throughput = null;
        long? capacity = null;
        var latencySensitive = true;
        long? maxCapacity = null;
        long? maxObjects = null;
        long? maxKeyBytes = null;
        TimeSpan? lease = null;
        foreach (var property in root.EnumerateObject())
        {
            var value = property.Value;
            var isNull = value.ValueKind == JsonValueKind.Null;
            switch (property.Name.ToLowerInvariant())
            {
                case "name":
                    if (value.ValueKind != JsonValueKind.String)
                    {
                        error = Fail("name", "must be a string");
                        return false;
                    }

                    jobName = value.GetString();
                    break;
                case "functions":
                    if (isNull)
                    {
                        break;
                    }

                    if (value.ValueKind != JsonValueKind.Number || !value.TryGetInt32(out var f) || f < 0)
                    {
                        error = Fail("functions", "must be a whole number >= 0");
                        return false;
                    }

                    functions = f;
                    break;
                case "peakthroughput":
                    if (isNull)
                    {
                        break;
                    }

                    if (!TryThroughput(value, out var t))
                    {
                        error = Fail("peakThroughput", $"{value.GetRawText()} is not a throughput: give bits/s as a number >= 0, or text such as \"2Gbps\", \"500 Mb/s\" or \"1GB/s\"");
                        return false;
                    }

                    throughput = t;
                    break;
                case "capacity":
                    if (isNull)
                    {
                        break;
                    }

                    if (!TryCapacity(value, out var c))
                    {
                        error = Fail("capacity", $"{value.GetRawText()} is not a capacity: give bytes as a whole number >= 0, or text such as \"10GiB\" or \"512MB\"");
                        return false;
                    }

                    capacity = c;
                    break;
                case "latencysensitive":
                    if (isNull)
                    {
                        break;
                    }

                    if (value.ValueKind is not (JsonValueKind.True or JsonValueKind.False))
                    {
                        error = Fail("latencySensitive", "must be true or false");
                        return false;
                    }

                    latencySensitive = value.GetBoolean();
                    break;
                case "maxcapacity" or "maxkeybytes":
                    if (isNull)
                    {
                        break;
                    }

                    var field = property.Name.Equals("maxCapacity", StringComparison.OrdinalIgnoreCase) ? "maxCapacity" : "maxKeyBytes";
                    if (!TryCapacity(value, out var limit))
                    {
                        error = Fail(field, $"{value.GetRawText()} is not a size: give bytes as a whole number >= 0, or text such as \"512MB\" (0: no limit)");
                        return false;
                    }

                    if (field == "maxCapacity")
                    {
                        maxCapacity = limit;
                    }
                    else
                    {
                        maxKeyBytes = limit;
                    }

                    break;
                case "maxobjects":
                    if (isNull)
                    {
                        break;
                    }

                    if (value.ValueKind != JsonValueKind.Number || !value.TryGetInt64(out var objects) || objects < 0)
                    {
                        error = Fail("maxObjects", "must be a whole number >= 0 (0: no limit)");
                        return false;
                    }

                    maxObjects = objects;
                    break;
                case "lease":
                    if (isNull)
                    {
                        break;
                    }

                    if (!TryDuration(value, out var l))
                    {
                        error = Fail("lease", $"{value.GetRawText()} is not a lease: give seconds as a number > 0, or text such as \"10m\", \"1h\" or \"1d\"");
                        return false;
                    }

                    lease = l;
                    break;
                default:
                    error = Fail(property.Name, "is not a field of a job registration (name, functions, peakThroughput, capacity, latencySensitive, maxCapacity, maxObjects, maxKeyBytes, lease)");
                    return false;
            }
        }

        if (string.IsNullOrEmpty(jobName))
        {
            error = Fail("name", "is required");
            return false;
        }

        name = jobName;
        hints = new JobHints
        {
            Functions = functions,
            PeakThroughputBitsPerSecond = throughput,
            CapacityBytes = capacity,
            LatencySensitive = latencySensitive,
            MaxCapacityBytes = maxCapacity,
            MaxObjects = maxObjects,
            MaxKeyBytes = maxKeyBytes,
            Lease = lease,
        };
        return true;
    }

    public static ErrorResponse Fail(string field, string message) => new($"{field}: {message}", field);

    private static bool TryThroughput(JsonElement value, out double bitsPerSecond)
    {
        bitsPerSecond = 0;
        var ok = value.ValueKind switch
        {
            JsonValueKind.Number => value.TryGetDouble(out bitsPerSecond),
            JsonValueKind.String => Units.TryParseBitsPerSecond(value.GetString(), out bitsPerSecond),
            _ => false,
        };
        return ok && bitsPerSecond >= 0 && double.IsFinite(bitsPerSecond);
    }

    private static bool TryDuration(JsonElement value, out TimeSpan duration)
    {
        duration = default;
        var ok = value.ValueKind switch
        {
            JsonValueKind.Number => value.TryGetDouble(out var seconds) && double.IsFinite(seconds) && seconds > 0 && seconds < TimeSpan.MaxValue.TotalSeconds
                && (duration = TimeSpan.FromSeconds(seconds)) > TimeSpan.Zero,
            JsonValueKind.String => Units.TryParseDuration(value.GetString() ?? string.Empty, out duration),
            _ => false,
        };
        return ok && duration > TimeSpan.Zero;
    }

    private static bool TryCapacity(JsonElement value, out long bytes)
    {
        bytes = 0;
        var ok = value.ValueKind switch
        {
            JsonValueKind.Number => value.TryGetInt64(out bytes),
            JsonValueKind.String => Units.TryParseBytes(value.GetString(), out bytes),
            _ => false,
        };
        return ok && bytes >= 0;
    }
}
