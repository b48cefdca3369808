using Pocket.Controller.Simulation;

namespace Pocket.Controller.Tests;

/// <summary>The simulator's metadata plane: the live policy on the traces' request rates (a per-job model), deterministic.</summary>
public sealed class MetadataSimulationTests
{
    [Fact]
    public void OneServerCarriesTheShippedTraceMovingMiBObjects()
    {
        var trace = SimulationTrace.Shipped() with { Metadata = new MetadataModelOptions { MaxServers = 4 } };
        var result = ClusterSimulator.Run(trace);
        var plane = Assert.IsType<MetadataPlaneResult>(result.Metadata);

        // ~9.5 K requests a second at the peak: inside one server's band, so the plane never grows.
        Assert.Equal(1, plane.PeakServers);
        Assert.Equal(result.Seconds, plane.ServerSeconds);
        Assert.Equal(0, plane.OverloadedSeconds);
        Assert.DoesNotContain(result.Events, e => e.Kind.StartsWith("metadata-", StringComparison.Ordinal));
    }

    [Fact]
    public void SmallObjectsScaleThePlaneUpTheSameWayEveryRun()
    {
        var trace = SimulationTrace.Shipped() with { Metadata = new MetadataModelOptions { MaxServers = 4, ObjectBytes = 16 << 10 } };
        var first = ClusterSimulator.Run(trace);
        var again = ClusterSimulator.Run(trace);
        var plane = first.Metadata!;

        Assert.Equal(4, plane.PeakServers);
        Assert.True(plane.ServerSeconds > first.Seconds, $"{plane.ServerSeconds} server-seconds over {first.Seconds} s");
        Assert.Contains(first.Events, e => e.Kind == "metadata-scale-up" && e.Reason.Contains("req/s", StringComparison.Ordinal));

        // Deterministic: the same trace gives the same plane, second by second.
        Assert.Equal(plane.ServerSeconds, again.Metadata!.ServerSeconds);
        Assert.Equal(plane.ServersBySecond, again.Metadata.ServersBySecond);
    }

    [Fact]
    public void BadModelSettingsAreRefused()
    {
        Assert.Throws<ArgumentException>(() => ClusterSimulator.Run(SimulationTrace.Shipped() with { Metadata = new MetadataModelOptions { MinServers = 3, MaxServers = 2 } }));
        Assert.Throws<ArgumentException>(() => ClusterSimulator.Run(SimulationTrace.Shipped() with { Metadata = new MetadataModelOptions { ObjectBytes = 0 } }));
    }
}
