using Pocket.Controller;
using Pocket.Controller.Contracts;

namespace Pocket.Controller.Tests;

public sealed class UnitsTests
{
    [Theory]
    [InlineData("1000", 1000)]
    [InlineData("2Gbps", 2e9)]
    [InlineData("2gbps", 2e9)]
    [InlineData("500 Mb/s", 500e6)]
    [InlineData("600Mbps", 600e6)]
    [InlineData("1.5 Gbit/s", 1.5e9)]
    [InlineData("10Kbps", 10e3)]
    [InlineData("1GB/s", 8e9)]
    [InlineData("1 MiB/s", 8.0 * 1024 * 1024)]
    [InlineData("100bps", 100)]
    public void ParsesThroughput(string text, double expected)
    {
        Assert.True(Units.TryParseBitsPerSecond(text, out var value));
        Assert.Equal(expected, value, 6);
    }

    [Theory]
    [InlineData("")]
    [InlineData("fast")]
    [InlineData("-2Gbps")]
    [InlineData("2Xbps")]
    [InlineData("2 Gb")]
    [InlineData("Gbps")]
    [InlineData("2GiGbps")]
    public void RejectsBadThroughput(string text) => Assert.False(Units.TryParseBitsPerSecond(text, out _));

    [Theory]
    [InlineData("4096", 4096)]
    [InlineData("10GiB", 10L << 30)]
    [InlineData("10gib", 10L << 30)]
    [InlineData("512 MiB", 512L << 20)]
    [InlineData("512MB", 512_000_000)]
    [InlineData("1.5GiB", 3L << 29)]
    [InlineData("64M", 64L << 20)]
    [InlineData("2TB", 2_000_000_000_000)]
    [InlineData("7B", 7)]
    public void ParsesCapacity(string text, long expected)
    {
        Assert.True(Units.TryParseBytes(text, out var value));
        Assert.Equal(expected, value);
    }

    [Theory]
    [InlineData("")]
    [InlineData("-1GiB")]
    [InlineData("10 GiX")]
    [InlineData("ten")]
    [InlineData("1GiBB")]
    [InlineData("99999999999EiB")]
    public void RejectsBadCapacity(string text) => Assert.False(Units.TryParseBytes(text, out _));

    [Fact]
    public void FormatsForPeople()
    {
        Assert.Equal("2 Gb/s", Units.FormatBitsPerSecond(2e9));
        Assert.Equal("600 Mb/s", Units.FormatBitsPerSecond(600e6));
        Assert.Equal("1.5 GiB", Units.FormatBytes(3L << 29));
        Assert.Equal("256 MiB", Units.FormatBytes(256L << 20));
    }
}
