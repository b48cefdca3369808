using System.Globalization;
using Pocket.Controller.Contracts;
using Pocket.Controller.Scaling;
using Pocket.Controller.Simulation;

namespace Pocket.Controller.Tests;

/// <summary>
/// The autoscaling policy run by <see cref="ClusterSimulator"/> on traces: the shipped trace within the bounds the docs
/// state, determinism, reaction to a spike and a drop, no flapping, and clear errors for bad traces.
/// </summary>
public sealed class SimulationTests
{
    /// <summary>
    /// A one-tier trace: 8 Gb/s, 60 GB DRAM nodes, the given jobs (each "name": [[at, Gb/s], ...]), under the paper's
    /// 60-80 % band, so the numbers below read as the paper's; the shipped traces run the defaults.
    /// </summary>
    private static string Trace(int initialNodes, string jobs, int cooldown = 10, string extra = "") => $$"""
        {
          "name": "test", "startDelay": 5, "drainTime": 5, "initialNodes": { "dram": {{initialNodes}} },
          "nodeClasses": { "dram": { "bandwidth": "8Gbps", "capacity": "60GB" } },
          "policy": { "lower": 0.6, "upper": 0.8, "minNodes": 2, "maxNodes": 16, "cooldown": {{cooldown}} }{{extra}},
          "jobs": [ {{jobs}} ]
        }
        """;

    // Registered without hints, so these tests see the band and the trend at work; the shipped traces' jobs declare
    // their peaks, and the tests further down show what that changes.
    private static string Job(string name, double start, double noise, params (double At, double Gbps)[] points) =>
        string.Create(CultureInfo.InvariantCulture, $$"""{ "name": "{{name}}", "start": {{start}}, "noise": {{noise}}, "hints": false, "profile": [ {{string.Join(", ", points.Select(p => string.Create(CultureInfo.InvariantCulture, $$"""{ "at": {{p.At}}, "throughput": "{{p.Gbps}}Gbps", "capacity": "1GB" }""")))}} ] }""");

    [Fact]
    public void TheShippedTraceIsThreeStaggeredJobsThatRampHoldAndEnd()
    {
        var trace = SimulationTrace.Shipped();

        Assert.Equal(SimulationTrace.ShippedName, trace.Name);
        Assert.Equal(3, trace.Jobs.Count);
        Assert.True(trace.Jobs[0].Start < trace.Jobs[1].Start && trace.Jobs[1].Start < trace.Jobs[2].Start, "jobs arrive one after another");
        Assert.True(trace.Jobs[1].Start < trace.Jobs[0].End && trace.Jobs[2].Start < trace.Jobs[1].End, "each job arrives while the one before runs");
        foreach (var job in trace.Jobs)
        {
            Assert.Equal(0, job.Profile[0].ThroughputBitsPerSecond);
            Assert.True(job.Profile.Max(p => p.ThroughputBitsPerSecond) > 0);
            Assert.Equal(0, job.At(job.End).ThroughputBitsPerSecond);
        }
    }

    /// <summary>
    /// The bounds docs/controller.md states for each shipped trace under the default policy: node-seconds against the
    /// oracle (the fewest nodes that meet each second's demand) and seconds some job was short of throughput. The
    /// simulation is deterministic, so these are the measured figures rounded up, and any change to the policy that
    /// costs more or leaves jobs short fails here.
    /// </summary>
    [Theory]
    [InlineData("paper-three-jobs", 1.13, 0, 0)]
    [InlineData("burst-small-jobs", 1.15, 1, 0)]
    [InlineData("day-with-peaks", 1.10, 62, 10)]
    public void EachShippedTraceStaysWithinTheStatedBounds(string name, double maxRatio, int maxShortSeconds, int maxCapacityShortSeconds)
    {
        var trace = SimulationTrace.Shipped(name);
        var result = ClusterSimulator.Run(trace);

        Assert.Equal(name, trace.Name);
        Assert.Equal(new AutoscalerOptions().Lower, trace.Policy.Lower);
        Assert.Equal(new AutoscalerOptions().Upper, trace.Policy.Upper);
        Assert.True(result.Ratio <= maxRatio, $"node-seconds {result.NodeSeconds} vs oracle {result.OracleNodeSeconds}: {result.Ratio:0.###}");
        Assert.True(result.NodeSeconds >= result.OracleNodeSeconds, "the policy never runs the cluster cheaper than the minimum over the whole trace");
        Assert.True(result.ShortSeconds <= maxShortSeconds, $"short {result.ShortSeconds} of {result.Seconds} s");
        Assert.True(result.CapacityShortSeconds <= maxCapacityShortSeconds, $"short of capacity {result.CapacityShortSeconds} s");

        Assert.True(result.ScaleUps >= 3, "the peaks need more than the two starting nodes");
        Assert.Equal(result.ScaleUps, result.ScaleDowns);
        Assert.All(result.Timeline, s => Assert.InRange(s.Provisioned, trace.Policy.MinNodes, trace.Policy.MaxNodes));
        Assert.All(result.Timeline, s => Assert.True(s.Serving >= trace.Policy.MinNodes));
        Assert.Equal(trace.Policy.MinNodes, result.Timeline[^1].Provisioned);
        Assert.All(result.Events.Where(e => e.Kind is "scale-up" or "scale-down"), e => Assert.False(string.IsNullOrWhiteSpace(e.Reason)));
        Assert.Equal(result.NodeSeconds, result.Timeline.Sum(s => s.Provisioned));
    }

    /// <summary>
    /// The goal issue 17 sets (docs/controller.md, "The shipped traces and their bounds"): on every shipped trace, at
    /// most 1.2 x the oracle's node-seconds and at most 1 % of the seconds short of throughput, through the same
    /// <see cref="AutoscalerPolicy.Decide"/> the live autoscaler runs.
    /// </summary>
    [Theory]
    [InlineData("paper-three-jobs")]
    [InlineData("burst-small-jobs")]
    [InlineData("day-with-peaks")]
    public void EachShippedTraceCostsAtMostOnePointTwoTimesTheOracleWithAtMostOnePercentShort(string name)
    {
        var result = ClusterSimulator.Run(SimulationTrace.Shipped(name));

        Assert.True(result.NodeSeconds <= 1.2 * result.OracleNodeSeconds, $"{name}: {result.NodeSeconds} node-seconds against the oracle's {result.OracleNodeSeconds} ({result.Ratio:0.###} x)");
        Assert.True(result.ShortSeconds <= 0.01 * result.Seconds, $"{name}: short {result.ShortSeconds} of {result.Seconds} s");
    }

    /// <summary>
    /// What the jobs declare when they register is what meets the bounds: without hints the burst of small jobs is short
    /// for longer (its load outruns a node's start) and the paper's trace costs more (the band's margin adds a node
    /// the declared peaks cannot use).
    /// </summary>
    [Fact]
    public void DeclaredHintsShortenTheBurstsShortfallAndCutThePaperTracesCost()
    {
        static SimulationResult Run(string name, bool hints)
        {
            var trace = SimulationTrace.Shipped(name);
            return ClusterSimulator.Run(hints ? trace : trace with { Jobs = [.. trace.Jobs.Select(j => j with { Declared = false })] });
        }

        var burst = Run("burst-small-jobs", hints: true);
        var burstBlind = Run("burst-small-jobs", hints: false);
        Assert.True(burst.ShortSeconds < burstBlind.ShortSeconds, $"short {burst.ShortSeconds} s with hints, {burstBlind.ShortSeconds} s without");
        var firstUp = burst.Events.First(e => e.Kind == "scale-up");
        Assert.Contains("registered", firstUp.Reason, StringComparison.Ordinal);
        Assert.True(firstUp.Second < burstBlind.Events.First(e => e.Kind == "scale-up").Second, "the registrations add the first node before the samples show the load");

        var paper = Run("paper-three-jobs", hints: true);
        var paperBlind = Run("paper-three-jobs", hints: false);
        Assert.True(paper.NodeSeconds < paperBlind.NodeSeconds, $"{paper.NodeSeconds} node-seconds with hints, {paperBlind.NodeSeconds} without");
        Assert.All(paper.Timeline, s => Assert.True(s.Serving <= 5, $"second {s.Second}: {s.Serving} nodes serve at most 40 Gb/s declared (5 nodes' worth)"));
    }

    [Fact]
    public void ATraceJobCanRegisterWithoutHints()
    {
        var trace = SimulationTrace.Parse(Trace(2, """{ "name": "blind", "start": 0, "hints": false, "profile": [ { "at": 0, "throughput": "1Gbps" }, { "at": 10, "throughput": "0" } ] }"""));
        Assert.False(Assert.Single(trace.Jobs).Declared);
        Assert.Null(trace.Jobs[0].Registration(ClusterSimulator.Epoch).PeakBitsPerSecond);
        Assert.True(SimulationTrace.Shipped().Jobs.All(j => j.Declared));
    }

    [Fact]
    public void TheNewPolicyCostsLessThanThePapersBandOnEveryShippedTrace()
    {
        foreach (var name in SimulationTrace.ShippedNames)
        {
            var trace = SimulationTrace.Shipped(name);
            var paper = ClusterSimulator.Run(trace with { Policy = trace.Policy with { Lower = 0.6, Upper = 0.8, Cooldown = TimeSpan.FromSeconds(10) } });
            var now = ClusterSimulator.Run(trace);
            Assert.True(now.NodeSeconds < paper.NodeSeconds, $"{name}: {now.NodeSeconds} node-seconds against {paper.NodeSeconds} with 60-80 %");
        }
    }

    [Fact]
    public void TheSameTraceGivesTheSameRun()
    {
        var json = Trace(3, Job("noisy", 0, 0.3, (0, 0), (30, 30), (120, 30), (150, 0)));
        var first = ClusterSimulator.Run(SimulationTrace.Parse(json));
        var second = ClusterSimulator.Run(SimulationTrace.Parse(json));

        Assert.Equal(first.Timeline, second.Timeline);
        Assert.Equal(first.Events, second.Events);
        Assert.Equal(first.NodeSeconds, second.NodeSeconds);

        // The noise is real: another seed gives another demand curve.
        var reseeded = ClusterSimulator.Run(SimulationTrace.Parse(json) with { Seed = 2 });
        Assert.NotEqual(first.Timeline.Select(s => s.DemandBitsPerSecond), reseeded.Timeline.Select(s => s.DemandBitsPerSecond));
    }

    [Fact]
    public void ASpikeAddsNodesUntilTheLoadIsBackInTheBand()
    {
        // 4 Gb/s on two 8 Gb/s nodes (25 %), then 40 Gb/s from second 60 to 300.
        var result = ClusterSimulator.Run(SimulationTrace.Parse(Trace(2, Job("spike", 0, 0, (0, 4), (59, 4), (60, 40), (300, 40), (301, 0)))));

        var ups = result.Events.Where(e => e.Kind == "scale-up").ToList();
        Assert.NotEmpty(ups);
        Assert.True(ups[0].Second is >= 60 and <= 61, $"the first node is asked for at once, at {ups[0].Second}");
        Assert.Contains("network", ups[0].Reason, StringComparison.Ordinal);

        // 40 Gb/s inside 80 % needs 7 nodes; by second 299 the policy holds at least that and is no longer short.
        var atPeak = result.Timeline[299];
        Assert.True(atPeak.Serving >= 7, $"{atPeak.Serving} nodes serve 40 Gb/s");
        Assert.False(atPeak.Short);
        Assert.True(atPeak.ServedBitsPerSecond / atPeak.SupplyBitsPerSecond <= 0.8);
        Assert.DoesNotContain(result.Timeline, s => s.Short && s.Second is >= 75 and < 300);
    }

    [Theory]
    [InlineData(10)]
    [InlineData(30)]
    public void ADropRemovesNodesOnlyAfterTheCooldownAndDownToTheMinimum(int cooldown)
    {
        // Six nodes, 4 Gb/s: far below the band from the start.
        var json = Trace(6, Job("small", 0, 0, (0, 4), (400, 4), (401, 0)), cooldown);
        var result = ClusterSimulator.Run(SimulationTrace.Parse(json));

        // After a full cooldown below the band, every node the load does not need goes at once (one decision, drained together).
        var downs = result.Events.Where(e => e.Kind == "scale-down").ToList();
        Assert.Equal(4, downs.Count);
        Assert.All(downs, d => Assert.Equal(cooldown, d.Second));
        Assert.Contains("least used", downs[0].Reason, StringComparison.Ordinal);

        Assert.Equal(2, result.Timeline[^1].Provisioned);
        Assert.Equal(0, result.ShortSeconds);
        Assert.DoesNotContain(result.Events, e => e.Kind == "scale-up");
    }

    [Fact]
    public void ANoisyLoadInsideTheBandNeverScales()
    {
        // 22.4 Gb/s on four 8 Gb/s nodes is 70 %; +-10 % noise keeps it between 63 % and 77 % for ten minutes.
        var result = ClusterSimulator.Run(SimulationTrace.Parse(Trace(4, Job("steady", 0, 0.1, (0, 22.4), (600, 22.4), (601, 0)), extra: ", \"duration\": 600")));

        Assert.Equal(600, result.Seconds);
        var min = result.Timeline.Min(s => s.DemandBitsPerSecond);
        var max = result.Timeline.Max(s => s.DemandBitsPerSecond);
        Assert.True(max - min > 3e9, "the load does move");
        Assert.Equal(0, result.ScaleUps);
        Assert.Equal(0, result.ScaleDowns);
        Assert.Equal(0, result.ShortSeconds);
    }

    [Fact]
    public void ALoadJustBelowTheBandDoesNotFlapBetweenRemovingAndAdding()
    {
        // 3 nodes at 55 %: removing one would put the other two at 82 %, above the band, so the policy keeps three.
        var result = ClusterSimulator.Run(SimulationTrace.Parse(Trace(3, Job("edge", 0, 0, (0, 13.2), (600, 13.2), (601, 0)), extra: ", \"duration\": 600")));

        Assert.Equal(0, result.ScaleUps);
        Assert.Equal(0, result.ScaleDowns);
    }

    [Fact]
    public void TheOracleRespectsTheMinimumAndCountsNeededNodes()
    {
        var result = ClusterSimulator.Run(SimulationTrace.Parse(Trace(2, Job("idle", 0, 0, (0, 0), (100, 0)), extra: ", \"duration\": 100")));
        Assert.Equal(200, result.OracleNodeSeconds);
        Assert.Equal(200, result.NodeSeconds);

        // 20 Gb/s needs three 8 Gb/s nodes; 30 Gb/s four.
        var busy = ClusterSimulator.Run(SimulationTrace.Parse(Trace(4, Job("busy", 0, 0, (0, 20), (10, 20), (11, 30), (20, 30), (21, 0)), extra: ", \"duration\": 20")));
        Assert.Equal(3, busy.Timeline[5].Oracle);
        Assert.Equal(4, busy.Timeline[15].Oracle);
    }

    [Fact]
    public void TheClusterStartsWithAtLeastTheMinimum()
    {
        var trace = SimulationTrace.Parse(Trace(1, Job("idle", 0, 0, (0, 0), (10, 0)), extra: ", \"duration\": 10"));
        Assert.Equal(2, ClusterSimulator.Run(trace).Timeline[0].Serving);
        Assert.Equal(3, ClusterSimulator.Run(trace with { Policy = trace.Policy with { MinNodes = 3 } }).Timeline[0].Serving);
    }

    [Theory]
    [InlineData(1)]
    [InlineData(3)]
    public void AWarmPoolCostsItsNodesEverySecondAndChangesNothingWhenNothingScales(int pool)
    {
        var trace = SimulationTrace.Parse(Trace(4, Job("steady", 0, 0.1, (0, 22.4), (600, 22.4), (601, 0)), extra: ", \"duration\": 600"));
        var cold = ClusterSimulator.Run(trace);
        var warm = ClusterSimulator.Run(trace with { WarmPool = pool });

        Assert.Equal(0, warm.ScaleUps);
        Assert.Equal(cold.NodeSeconds + (pool * warm.Seconds), warm.NodeSeconds);
        Assert.Equal(cold.OracleNodeSeconds, warm.OracleNodeSeconds);
        Assert.Equal(cold.ShortSeconds, warm.ShortSeconds);
        Assert.All(warm.Timeline, s => Assert.Equal(pool, s.Standby));
        Assert.Equal(warm.NodeSeconds, warm.Timeline.Sum(s => s.Provisioned));
    }

    /// <summary>
    /// A slow cold start (60 s) and a ramp that needs four nodes more, one decision per cooldown: with a pool of N the
    /// first N scale-ups serve after the warm delay, the next waits a cold start (the replacement takes 60 s too),
    /// and the pool never holds more than N.
    /// </summary>
    [Theory]
    [InlineData(0)]
    [InlineData(1)]
    [InlineData(2)]
    public void AWarmPoolOfNMakesTheFirstNScaleUpsTakeTheWarmDelayAndTheRestTheStartDelay(int pool)
    {
        var trace = SimulationTrace.Parse(Trace(2, Job("ramp", 0, 0, (0, 4), (59, 4), (60, 40), (400, 40), (401, 0)), cooldown: 2)) with
        {
            StartDelay = TimeSpan.FromSeconds(60),
            WarmPool = pool,
            WarmDelay = TimeSpan.FromSeconds(1),
        };
        var result = ClusterSimulator.Run(trace);

        var ups = result.Events.Where(e => e.Kind == "scale-up").ToList();
        Assert.True(ups.Count > pool + 1, $"{ups.Count} scale-ups");
        for (var i = 0; i <= pool; i++)
        {
            var serves = result.Events.Single(e => e.Kind == "node-started" && e.NodeId == ups[i].NodeId).Second;
            var warm = i < pool;
            Assert.Equal(warm ? 1 : 60, serves - ups[i].Second);
            Assert.Equal(warm, ups[i].Reason.Contains("warm pool", StringComparison.Ordinal));
        }

        Assert.All(result.Timeline, s => Assert.InRange(s.Standby, 0, pool));
        Assert.Equal(result.NodeSeconds, result.Timeline.Sum(s => s.Provisioned));

        // A replacement stands by for every claim (one start at a time), and the run ends with the pool full.
        Assert.Equal(pool, result.Timeline[^1].Standby);
        Assert.Equal(ups.Count(e => e.Reason.Contains("warm pool", StringComparison.Ordinal)), result.Events.Count(e => e.Kind == "pool-added"));
        if (pool > 0)
        {
            var noPool = ClusterSimulator.Run(trace with { WarmPool = 0 });
            Assert.True(result.ShortSeconds < noPool.ShortSeconds, $"short {result.ShortSeconds} s with a pool of {pool}, {noPool.ShortSeconds} s without");
        }
    }

    [Theory]
    [InlineData(-1)]
    [InlineData(65)]
    public void AWarmPoolOutOfRangeIsRefused(int pool)
    {
        var ex = Assert.Throws<SimulationTraceException>(() => SimulationTrace.Parse(Trace(2, Job("a", 0, 0, (0, 1), (10, 1)), extra: $", \"warmPool\": {pool}")));
        Assert.Contains("warmPool", ex.Message, StringComparison.Ordinal);
        var trace = SimulationTrace.Parse(Trace(2, Job("a", 0, 0, (0, 1), (10, 1))));
        Assert.Throws<ArgumentException>(() => ClusterSimulator.Run(trace with { WarmPool = pool }));
    }

    [Theory]
    [InlineData("{ \"jobs\": [ { \"name\": \"a\", ", "line 1")]
    [InlineData("{\n  \"jobs\": [],\n  \"surprise\": 1\n}", "line 3, column 14 (surprise): unknown field 'surprise'")]
    [InlineData("{ \"jobs\": [ null ] }", "jobs[0]: null is not a job")]
    [InlineData("{ \"jobs\": [ { \"name\": \"a\", \"profile\": [ { \"at\": 0 }, null ] } ] }", "jobs[0] (a).profile[1]: null is not a point")]
    [InlineData("{ \"jobs\": [ { \"name\": \"a\", \"start\": \"soon\" } ] }", "jobs[0].start")]
    [InlineData("{ \"jobs\": [] }", "at least one job")]
    [InlineData("{ \"jobs\": [ { \"name\": \"a\", \"profile\": [ { \"at\": 0, \"throughput\": \"-5Gbps\" }, { \"at\": 10 } ] } ] }", "jobs[0] (a).profile[0].throughput: '-5Gbps' is negative")]
    [InlineData("{ \"jobs\": [ { \"name\": \"a\", \"profile\": [ { \"at\": 0, \"capacity\": -1 }, { \"at\": 10 } ] } ] }", "jobs[0] (a).profile[0].capacity")]
    [InlineData("{ \"jobs\": [ { \"name\": \"a\", \"start\": -3, \"profile\": [ { \"at\": 0 }, { \"at\": 10 } ] } ] }", "jobs[0] (a).start")]
    [InlineData("{ \"jobs\": [ { \"name\": \"a\", \"profile\": [ { \"at\": 0 }, { \"at\": 10 }, { \"at\": 5 } ] } ] }", "profile[2].at: times must increase")]
    [InlineData("{ \"jobs\": [ { \"name\": \"a\", \"profile\": [ { \"at\": 0, \"throughput\": \"fast\" }, { \"at\": 10 } ] } ] }", "'fast' is not a throughput")]
    [InlineData("{ \"jobs\": [ { \"name\": \"a\", \"tier\": \"ssd\", \"profile\": [ { \"at\": 0 }, { \"at\": 10 } ] } ] }", "no initial ssd node")]
    [InlineData("{ \"jobs\": [ { \"name\": \"a\", \"tier\": \"tape\", \"profile\": [ { \"at\": 0 }, { \"at\": 10 } ] } ] }", "'tape' is not a tier")]
    [InlineData("{ \"policy\": { \"lower\": 0.9, \"upper\": 0.8 }, \"jobs\": [ { \"name\": \"a\", \"profile\": [ { \"at\": 0 }, { \"at\": 10 } ] } ] }", "policy: autoscaler bounds")]
    [InlineData("{ \"policy\": { \"cooldown\": -1 }, \"jobs\": [ { \"name\": \"a\", \"profile\": [ { \"at\": 0 }, { \"at\": 10 } ] } ] }", "policy.cooldown")]
    [InlineData("{ \"initialNodes\": { \"dram\": 40 }, \"jobs\": [ { \"name\": \"a\", \"profile\": [ { \"at\": 0 }, { \"at\": 10 } ] } ] }", "exceed policy.maxNodes")]
    public void ABadTraceIsRefusedWithTheLineOrFieldAtFault(string json, string expected)
    {
        var ex = Assert.Throws<SimulationTraceException>(() => SimulationTrace.Parse(json));
        Assert.Contains(expected, ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void ABadJsonTypeNamesItsLine()
    {
        var ex = Assert.Throws<SimulationTraceException>(() => SimulationTrace.Parse("{\n  \"name\": \"x\",\n  \"startDelay\": \"five\"\n}"));
        Assert.Contains("line 3", ex.Message, StringComparison.Ordinal);
        Assert.Contains("startDelay", ex.Message, StringComparison.Ordinal);
    }
}
