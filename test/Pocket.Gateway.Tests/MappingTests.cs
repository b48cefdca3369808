using Pocket.Controller.Contracts;
using Pocket.Protocol;

namespace Pocket.Gateway.Tests;

/// <summary>The pure pieces: ranges, key mapping, bucket names, hints.</summary>
public sealed class MappingTests
{
    [Theory]
    [InlineData(null, 0L, 1000L, false)]
    [InlineData("bytes=0-99", 0L, 100L, true)]
    [InlineData("bytes=900-", 900L, 100L, true)]
    [InlineData("bytes=-10", 990L, 10L, true)]
    [InlineData("bytes=-5000", 0L, 1000L, true)]
    [InlineData("bytes=990-5000", 990L, 10L, true)]
    [InlineData("bytes=5-4", 0L, 1000L, false)]
    [InlineData("bytes=0-1,5-6", 0L, 1000L, false)]
    [InlineData("items=0-1", 0L, 1000L, false)]
    public void RangesAreReadAsS3ReadsThem(string? header, long offset, long length, bool partial)
    {
        Assert.Equal((offset, length, partial), S3Handler.ParseRange(header, 1000));
    }

    [Theory]
    [InlineData("bytes=1000-")]
    [InlineData("bytes=5000-6000")]
    [InlineData("bytes=-0")]
    public void UnsatisfiableRangesAreInvalidRange(string header)
    {
        Assert.Equal(S3Error.InvalidRange, Assert.Throws<S3Exception>(() => S3Handler.ParseRange(header, 1000)).Error);
    }

    [Fact]
    public void KeysMapToPocketKeysAndBack()
    {
        var limits = ProtocolLimits.Default;
        Assert.Equal("a/b/c", KeyMapping.ToPocket("a/b/c", limits));
        var folder = KeyMapping.ToPocket("photos/2024/", limits);
        Assert.NotEqual("photos/2024/", folder);
        Assert.Equal("photos/2024/", KeyMapping.ToS3(folder));
        Assert.StartsWith("photos/2024/", folder, StringComparison.Ordinal);
        Assert.False(KeyMapping.IsRecord(folder));
        Assert.True(KeyMapping.IsRecord(KeyMapping.RecordKey(folder)));

        foreach (var bad in new[] { "/leading", "a//b", "a/./b", "..", "x\u0001y", "has\uffffreserved", string.Empty })
        {
            Assert.Equal(S3Error.InvalidArgument, Assert.Throws<S3Exception>(() => KeyMapping.ToPocket(bad, limits)).Error);
        }

        Assert.Equal(S3Error.KeyTooLong, Assert.Throws<S3Exception>(() => KeyMapping.ToPocket(new string('k', 1020), limits)).Error);
        Assert.Equal(S3Error.KeyTooLong, Assert.Throws<S3Exception>(() => KeyMapping.ToPocket(string.Join('/', Enumerable.Repeat("p", 63)), limits)).Error);
        KeyMapping.ToPocket(new string('k', 1000), limits);
    }

    [Theory]
    [InlineData("", "")]
    [InlineData("logs/2024-", "logs/2024-")]
    [InlineData("a/.", "a/")]
    [InlineData(".", "")]
    [InlineData("a//", null)]
    [InlineData("/x", null)]
    public void ListingPrefixesFallBackToTheirFolder(string prefix, string? expected)
    {
        Assert.Equal(expected, KeyMapping.ListablePrefix(prefix, ProtocolLimits.Default));
    }

    [Theory]
    [InlineData("abc", true)]
    [InlineData("my.bucket-01", true)]
    [InlineData("ab", false)]
    [InlineData("Upper", false)]
    [InlineData("-dash", false)]
    [InlineData("a..b", false)]
    [InlineData("192.168.1.1", false)]
    [InlineData("xn--punycode", false)]
    [InlineData("under_score", false)]
    public void BucketNamesFollowS3sRules(string name, bool valid)
    {
        Assert.Equal(valid, S3Handler.IsValidBucketName(name, out _));
    }

    [Fact]
    public void HintsParseFromTheHeaderSyntax()
    {
        Assert.True(JobHints.TryParse("functions=10, capacity=1GiB ,peak-throughput=2Gbps,latency-sensitive=false", out var hints, out _));
        Assert.Equal(new JobHints { Functions = 10, CapacityBytes = 1L << 30, PeakThroughputBitsPerSecond = 2e9, LatencySensitive = false }, hints);
        Assert.True(JobHints.TryParse(null, out var none, out _));
        Assert.Equal(JobHints.None, none);
        Assert.False(JobHints.TryParse("functions=many", out _, out var error));
        Assert.Contains("functions", error, StringComparison.Ordinal);
        Assert.False(JobHints.TryParse("capacity=lots", out _, out error));
        Assert.Contains("capacity 'lots'", error, StringComparison.Ordinal);
        Assert.False(JobHints.TryParse("throughput=fast", out _, out error));
        Assert.Contains("peak-throughput 'fast'", error, StringComparison.Ordinal);
        Assert.False(JobHints.TryParse("colour=blue", out _, out _));
        Assert.False(JobHints.TryParse("latency-sensitive=maybe", out _, out _));
        Assert.True(JobHints.TryParse("lease=1h", out var leased, out _));
        Assert.Equal(TimeSpan.FromHours(1), leased.Lease);
        Assert.False(JobHints.TryParse("lease=0s", out _, out error));
        Assert.Contains("lease '0s'", error, StringComparison.Ordinal);
    }

    [Fact]
    public void OptionsAreValidated()
    {
        var good = new GatewayOptions { ControllerUrl = new Uri("http://127.0.0.1:7070"), Users = new Dictionary<string, string> { ["ak"] = "sk" } };
        good.Validate();
        Assert.Throws<ArgumentException>(() => (good with { ControllerUrl = new Uri("ftp://x") }).Validate());
        Assert.Throws<ArgumentException>(() => (good with { MetadataAddress = "no-port" }).Validate());
        Assert.Throws<ArgumentException>(() => (good with { Users = new Dictionary<string, string> { ["ak"] = string.Empty } }).Validate());
        Assert.Throws<ArgumentException>(() => (good with { Users = new Dictionary<string, string>(), AllowJobCredentials = false }).Validate());
        Assert.Throws<ArgumentException>(() => (good with { DefaultHints = "bogus=1" }).Validate());
        Assert.Throws<ArgumentException>(() => (good with { MinPartSize = 10, MaxPartSize = 5 }).Validate());
    }
}
