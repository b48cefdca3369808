using System.Globalization;

namespace Pocket.Cli;

/// <summary>Sizes ("64MiB", "1000") and durations ("500ms", "10s", "2m") as people type them.</summary>
internal static class Units
{
    private static readonly (string Suffix, double Seconds)[] DurationSuffixes =
    [
        ("ms", 0.001), ("us", 0.000001), ("s", 1), ("m", 60), ("h", 3600),
    ];

    /// <summary>Sizes read the same as the controller's API reads them ("64MiB", "1GB", a bare "64M" is binary).</summary>
    public static bool TryParseSize(string text, out long bytes) => Pocket.Controller.Units.TryParseBytes(text, out bytes);

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

    public static string FormatSize(long bytes)
    {
        string[] units = ["B", "KiB", "MiB", "GiB", "TiB"];
        double value = bytes;
        var unit = 0;
        while (Math.Abs(value) >= 1024 && unit < units.Length - 1)
        {
            value /= 1024;
            unit++;
        }

        return unit == 0
            ? string.Create(CultureInfo.InvariantCulture, $"{bytes} B")
            : string.Create(CultureInfo.InvariantCulture, $"{value:0.##} {units[unit]}");
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

    public static string FormatDuration(TimeSpan duration) =>
        duration.TotalSeconds >= 1
            ? string.Create(CultureInfo.InvariantCulture, $"{duration.TotalSeconds:0.###}s")
            : string.Create(CultureInfo.InvariantCulture, $"{duration.TotalMilliseconds:0.###}ms");
}
