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

        // The run goes on past the last job until the plane has drained back to its one server.
        Assert.Contains(first.Events, e => e.Kind == "metadata-draining");
        Assert.Contains(first.Events, e => e.Kind == "metadata-stopped");
        Assert.Equal(1, plane.ServersBySecond[^1]);
        var lastEnd = first.Events.Where(e => e.Kind == "job-ended").Max(e => e.Second);
        var lastStop = first.Events.Where(e => e.Kind == "metadata-stopped").Max(e => e.Second);
        Assert.True(lastStop > lastEnd, $"the last server stopped at {lastStop} s, the last job ended at {lastEnd} s");
        Assert.True(first.Seconds > lastStop, $"the run ended at {first.Seconds} s, before the plane settled at {lastStop} s");

        // Deterministic: the same trace gives the same plane, second by second.
        Assert.Equal(plane.ServerSeconds, again.Metadata!.ServerSeconds);
        Assert.Equal(plane.ServersBySecond, again.Metadata.ServersBySecond);
    }

    /// <summary>
    /// The end-of-run rule as a theory over plane sizes: whatever the plane grew to, the run ends with it back at its
    /// minimum, each server above it stopped after the last job ended, and never later than the settle bound.
    /// </summary>
    [Theory]
    [InlineData(1, 2)]
    [InlineData(1, 4)]
    [InlineData(2, 4)]
    public void TheRunEndsWithThePlaneBackAtItsMinimum(int min, int max)
    {
        var options = new MetadataModelOptions { MinServers = min, MaxServers = max, ObjectBytes = 16 << 10 };
        var result = ClusterSimulator.Run(SimulationTrace.Shipped() with { Metadata = options });
        var plane = result.Metadata!;

        Assert.True(plane.PeakServers > min, $"the plane never grew past {min}");
        Assert.Equal(min, plane.ServersBySecond[^1]);
        Assert.Equal(plane.PeakServers - min, result.Events.Count(e => e.Kind == "metadata-stopped") - result.Events.Count(e => e.Kind == "metadata-resumed"));
        var lastEnd = result.Events.Where(e => e.Kind == "job-ended").Max(e => e.Second);
        var settle = options.StartDelay + (options.Band.Cooldown * (max - min + 1));
        Assert.True(result.Events.Where(e => e.Kind == "metadata-stopped").Max(e => e.Second) <= lastEnd + settle.TotalSeconds);
    }

    [Fact]
    public void BadModelSettingsAreRefused()
    {
        Assert.Throws<ArgumentException>(() => ClusterSimulator.Run(SimulationTrace.Shipped() with { Metadata = new MetadataModelOptions { MinServers = 3, MaxServers = 2 } }));
        Assert.Throws<ArgumentException>(() => ClusterSimulator.Run(SimulationTrace.Shipped() with { Metadata = new MetadataModelOptions { ObjectBytes = 0 } }));
    }
}
