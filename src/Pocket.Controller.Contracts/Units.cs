using System.Globalization;

namespace Pocket.Controller.Contracts;

/// <summary>
/// Parses and prints the quantities hints are given in: throughput ("2Gbps", "500 Mb/s", "1.5GB/s") and
/// capacity ("10GiB", "512MB", "4096"). Shared by the HTTP API and the CLI so both accept the same text.
/// </summary>
public static class Units
{
    /// <summary>
    /// Parses a throughput into bits per second. A bare number is bits per second. Units: bps, Kbps, Mbps, Gbps,
    /// Tbps (also written b/s, Mb/s, ...; decimal prefixes); with a capital B they are bytes per second
    /// (B/s, KB/s, MB/s, GB/s, KiB/s, MiB/s, GiB/s, ...), multiplied by 8.
    /// </summary>
    public static bool TryParseBitsPerSecond(string? text, out double bitsPerSecond)
    {
        bitsPerSecond = 0;
        if (!TrySplit(text, out var number, out var unit))
        {
            return false;
        }

        if (unit.Length == 0)
        {
            bitsPerSecond = number;
            return true;
        }

        // Suffix "ps", "/s" or "it/s" (as in "Mbit/s"); what stands before it is prefix + 'b' (bits) or 'B' (bytes).
        string head;
        if (unit.EndsWith("bit/s", StringComparison.OrdinalIgnoreCase))
        {
            head = unit[..^4];
        }
        else if (unit.EndsWith("ps", StringComparison.Ordinal) || unit.EndsWith("/s", StringComparison.Ordinal))
        {
            head = unit[..^2];
        }
        else
        {
            return false;
        }

        if (head.Length == 0)
        {
            return false;
        }

        var bytes = head[^1] switch
        {
            'b' => false,
            'B' => true,
            _ => (bool?)null,
        };
        if (bytes is null || !TryPrefix(head[..^1], out var multiplier))
        {
            return false;
        }

        bitsPerSecond = number * multiplier * (bytes.Value ? 8 : 1);
        return true;
    }

    /// <summary>
    /// Parses a capacity into bytes. A bare number is bytes. Units (case-insensitive): B, KB, MB, GB, TB
    /// (powers of 1000) and KiB, MiB, GiB, TiB (powers of 1024); a bare K, M, G or T is the binary unit.
    /// </summary>
    public static bool TryParseBytes(string? text, out long bytes)
    {
        bytes = 0;
        if (!TrySplit(text, out var number, out var unit))
        {
            return false;
        }

        double multiplier;
        if (unit.Length == 0)
        {
            multiplier = 1;
        }
        else if (!unit.EndsWith('B') && !unit.EndsWith('b'))
        {
            // A bare prefix ("64M") means the binary unit, as the CLI reads it.
            if (unit.Length != 1 || !TryPrefix(unit + "i", out multiplier))
            {
                return false;
            }
        }
        else if (!TryPrefix(unit[..^1], out multiplier))
        {
            return false;
        }

        var value = Math.Ceiling(number * multiplier);
        if (value > long.MaxValue)
        {
            return false;
        }

        bytes = (long)value;
        return true;
    }

    /// <summary>"2 Gb/s", "600 Mb/s": decimal prefixes, as network speeds are quoted.</summary>
    public static string FormatBitsPerSecond(double bitsPerSecond)
    {
        string[] units = ["b/s", "Kb/s", "Mb/s", "Gb/s", "Tb/s"];
        var i = 0;
        while (Math.Abs(bitsPerSecond) >= 1000 && i < units.Length - 1)
        {
            bitsPerSecond /= 1000;
            i++;
        }

        return string.Create(CultureInfo.InvariantCulture, $"{bitsPerSecond:0.###} {units[i]}");
    }

    /// <summary>"1.5 GiB", "256 MiB": binary prefixes, as memory is quoted.</summary>
    public static string FormatBytes(double bytes)
    {
        string[] units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
        var i = 0;
        while (Math.Abs(bytes) >= 1024 && i < units.Length - 1)
        {
            bytes /= 1024;
            i++;
        }

        return string.Create(CultureInfo.InvariantCulture, $"{bytes:0.##} {units[i]}");
    }

    private static bool TrySplit(string? text, out double number, out string unit)
    {
        number = 0;
        unit = string.Empty;
        if (string.IsNullOrWhiteSpace(text))
        {
            return false;
        }

        var span = text.AsSpan().Trim();
        var end = 0;
        while (end < span.Length && (char.IsAsciiDigit(span[end]) || span[end] == '.'))
        {
            end++;
        }

        if (end == 0 || !double.TryParse(span[..end], NumberStyles.AllowDecimalPoint, CultureInfo.InvariantCulture, out number) || !double.IsFinite(number))
        {
            return false;
        }

        unit = span[end..].Trim().ToString();
        return true;
    }

    private static bool TryPrefix(string prefix, out double multiplier)
    {
        multiplier = 1;
        if (prefix.Length == 0)
        {
            return true;
        }

        var binary = prefix.Length == 2 && prefix[1] is 'i' or 'I';
        if (prefix.Length > (binary ? 2 : 1))
        {
            return false;
        }

        // Prefixes are read case-insensitively ("gbps" is what people type); only b/B (bits/bytes) is case-sensitive.
        var power = char.ToUpperInvariant(prefix[0]) switch
        {
            'K' => 1,
            'M' => 2,
            'G' => 3,
            'T' => 4,
            'P' => 5,
            _ => 0,
        };
        if (power == 0)
        {
            return false;
        }

        multiplier = Math.Pow(binary ? 1024 : 1000, power);
        return true;
    }

    private static readonly (string Suffix, double Seconds)[] DurationSuffixes =
    [
        ("ms", 0.001), ("us", 0.000001), ("s", 1), ("m", 60), ("h", 3600), ("d", 86400),
    ];

    /// <summary>A duration as people type it ("500ms", "10s", "2m", "1h", "1d"; a bare number is seconds).</summary>
    public static bool TryParseDuration(string text, out TimeSpan duration)
    {
        duration = default;
        var s = text.Trim();
        var seconds = 1.0;
        foreach (var (suffix, f) in DurationSuffixes)
        {
            if (s.EndsWith(suffix, StringComparison.OrdinalIgnoreCase))
            {
                s = s[..^suffix.Length].Trim();
                seconds = f;
                break;
            }
        }

        if (!double.TryParse(s, NumberStyles.Float, CultureInfo.InvariantCulture, out var value) || value < 0 || double.IsNaN(value) || value * seconds > TimeSpan.MaxValue.TotalSeconds)
        {
            return false;
        }

        duration = TimeSpan.FromSeconds(value * seconds);
        return true;
    }

    /// <summary>The shortest exact form: "1KiB" rather than "1024".</summary>
    public static string FormatSizeCompact(long bytes)
    {
        foreach (var (suffix, factor) in new[] { ("GiB", 1L << 30), ("MiB", 1L << 20), ("KiB", 1L << 10) })
        {
            if (bytes >= factor && bytes % factor == 0)
            {
                return string.Create(CultureInfo.InvariantCulture, $"{bytes / factor}{suffix}");
            }
        }

        return bytes.ToString(CultureInfo.InvariantCulture);
    }

    /// <summary>A duration in seconds, or in milliseconds below one second.</summary>
    public static string FormatDuration(TimeSpan duration) =>
        duration.TotalSeconds >= 1
            ? string.Create(CultureInfo.InvariantCulture, $"{duration.TotalSeconds:0.###}s")
            : string.Create(CultureInfo.InvariantCulture, $"{duration.TotalMilliseconds:0.###}ms");
}
