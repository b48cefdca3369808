using Pocket.Controller.Provisioning;
using Pocket.Protocol;

namespace Pocket.Controller.Tests;

public sealed class RoleCommandLineTests
{
    [Fact]
    public void ReadyLinesNameTheMetricsUrlOnlyWhenTheRoleServesMetrics()
    {
        var metrics = new Uri("https://10.0.0.7:9464/metrics");
        var storage = RoleCommandLine.StorageReadyLine(7, "10.0.0.7:7100", metrics);
        Assert.True(RoleCommandLine.TryParseStorageReady(storage, out var id, out var address));
        Assert.Equal((7u, "10.0.0.7:7100"), (id, address));
        Assert.Equal(metrics, RoleCommandLine.MetricsUrl(storage));

        var metadata = RoleCommandLine.MetadataReadyLine("127.0.0.1:7070", tls: true, metrics);
        Assert.True(RoleCommandLine.TryParseMetadataReady(metadata, out var metadataAddress));
        Assert.Equal("127.0.0.1:7070", metadataAddress);
        Assert.Equal(metrics, RoleCommandLine.MetricsUrl(metadata));

        // Without metrics the lines are as before, and nothing else passes for a metrics URL.
        Assert.Equal("POCKET-NODE id=7 address=10.0.0.7:7100", RoleCommandLine.StorageReadyLine(7, "10.0.0.7:7100"));
        Assert.Null(RoleCommandLine.MetricsUrl(RoleCommandLine.StorageReadyLine(7, "10.0.0.7:7100")));
        Assert.Null(RoleCommandLine.MetricsUrl("POCKET-NODE id=7 address=a:1 metrics=ftp://x/metrics"));
        Assert.Null(RoleCommandLine.MetricsUrl("POCKET-NODE id=7 address=a:1 metrics=not-a-url"));
    }

    [Fact]
    public void TheMetricsPortReachesTheRolesArguments()
    {
        var storage = RoleCommandLine.Storage(new StorageRoleArguments("m:7070", NodeTier.Dram, 1 << 30) { MetricsPort = 0 });
        Assert.Equal("0", storage[storage.IndexOf("--metrics-port") + 1]);
        Assert.DoesNotContain("--metrics-port", RoleCommandLine.Storage(new StorageRoleArguments("m:7070", NodeTier.Dram, 1 << 30)));

        var metadata = RoleCommandLine.Metadata("127.0.0.1", 0, stopOnStdinEof: true, metricsPort: 9464);
        Assert.Equal("9464", metadata[metadata.IndexOf("--metrics-port") + 1]);
        Assert.DoesNotContain("--metrics-port", RoleCommandLine.Metadata("127.0.0.1", 0, stopOnStdinEof: true));
    }

    [Fact]
    public void TheDramHeadroomReachesDramNodesOnly()
    {
        var dram = RoleCommandLine.Storage(new StorageRoleArguments("m:7070", NodeTier.Dram, 1 << 30) { DramHeadroom = 0 });
        Assert.Equal("0", dram[dram.IndexOf("--dram-headroom") + 1]);
        Assert.DoesNotContain("--dram-headroom", RoleCommandLine.Storage(new StorageRoleArguments("m:7070", NodeTier.Ssd, 1 << 30) { DramHeadroom = 1 << 20 }));
        Assert.DoesNotContain("--dram-headroom", RoleCommandLine.Storage(new StorageRoleArguments("m:7070", NodeTier.Dram, 1 << 30)));
    }
}
