using Pocket.Controller.Scaling;

namespace Pocket.Controller.Tests;

/// <summary>The metadata plane's scaling policy as a pure function: the band, how long a state must last, the cooldown, min and max.</summary>
public sealed class MetadataScalingPolicyTests
{
    private static readonly DateTimeOffset T0 = new(2026, 12, 4, 10, 0, 0, TimeSpan.Zero);

    private static readonly MetadataScalingOptions Options = new()
    {
        CpuLow = 0.3,
        CpuHigh = 0.7,
        RequestsLow = 1_000,
        RequestsHigh = 5_000,
        UpAfter = TimeSpan.FromSeconds(5),
        Cooldown = TimeSpan.FromSeconds(60),
    };

    private static MetadataServerSample Server(string address, double cpu, double requests, int jobs = 1, bool draining = false, bool removable = true) =>
        new(address, draining, cpu, requests, jobs, removable);

    public static TheoryData<string, MetadataServerSample[], int, MetadataScalingAction, string?> Table => new()
    {
        // What the load is, per serving server; how long it has been so is the state below (60 s, enough for every rule).
        { "cpu above the band adds a server", [Server("a", 0.9, 100, removable: false)], 3, MetadataScalingAction.AddServer, null },
        { "requests above the band add a server", [Server("a", 0.1, 9_000, removable: false)], 3, MetadataScalingAction.AddServer, null },
        { "the mean counts, not the busiest server", [Server("a", 0.9, 100, removable: false), Server("b", 0.3, 100)], 3, MetadataScalingAction.None, null },
        { "at the maximum nothing is added", [Server("a", 0.9, 100, removable: false), Server("b", 0.9, 100)], 2, MetadataScalingAction.None, null },
        { "a draining server is taken back before one is started", [Server("a", 0.9, 100, removable: false), Server("b", 0.1, 0, draining: true)], 3, MetadataScalingAction.ResumeServer, "b" },
        { "inside the band nothing happens", [Server("a", 0.5, 2_000, removable: false), Server("b", 0.5, 2_000)], 3, MetadataScalingAction.None, null },
        { "below the band the removable server with the fewest jobs drains", [Server("a", 0.05, 10, jobs: 0, removable: false), Server("b", 0.05, 10, jobs: 4), Server("c", 0.05, 10, jobs: 2)], 3, MetadataScalingAction.DrainServer, "c" },
        { "cpu below but requests inside the band keeps every server", [Server("a", 0.05, 2_000, removable: false), Server("b", 0.05, 2_000)], 3, MetadataScalingAction.None, null },
        { "the first servers (the minimum) never drain", [Server("a", 0.01, 0, removable: false)], 3, MetadataScalingAction.None, null },
        { "a server the controller did not start never drains", [Server("a", 0.01, 0, removable: false), Server("b", 0.01, 0, removable: false)], 3, MetadataScalingAction.None, null },
        { "a draining server's load does not count as serving", [Server("a", 0.05, 10, removable: false), Server("b", 0.95, 9_000, draining: true)], 3, MetadataScalingAction.None, null },
    };

    [Theory]
    [MemberData(nameof(Table))]
    public void TheBandDecides(string why, MetadataServerSample[] servers, int maxServers, MetadataScalingAction action, string? address)
    {
        // The same load for a minute, the last action long ago: every duration rule is met.
        var state = new MetadataScalingState(T0, T0, T0 - TimeSpan.FromHours(1));
        var (decision, _) = MetadataScalingPolicy.Decide(servers, minServers: 1, maxServers, joining: false, Options, state, T0 + TimeSpan.FromSeconds(60));
        Assert.True(decision.Action == action, $"{why}: {decision.Action} ({decision.Reason})");
        if (address is not null)
        {
            Assert.Equal(address, decision.Address);
        }

        if (action != MetadataScalingAction.None)
        {
            Assert.False(string.IsNullOrEmpty(decision.Reason), why);
        }
    }

    [Fact]
    public void NoServerDrainsWhenTheLoadOverOneFewerWouldBeAboveTheBand()
    {
        // A narrow band: 0.25 of a core on each of two servers is below 0.3, but 0.5 on one is above 0.4.
        var narrow = Options with { CpuHigh = 0.4 };
        var state = new MetadataScalingState(null, T0, null);
        MetadataServerSample[] two = [Server("a", 0.25, 100, removable: false), Server("b", 0.25, 100)];
        Assert.Equal(MetadataScalingAction.None, MetadataScalingPolicy.Decide(two, 1, 2, false, narrow, state, T0 + TimeSpan.FromMinutes(5)).Decision.Action);

        MetadataServerSample[] three = [.. two, Server("c", 0.25, 100)];
        Assert.Equal(MetadataScalingAction.DrainServer, MetadataScalingPolicy.Decide(three, 1, 3, false, narrow, state, T0 + TimeSpan.FromMinutes(5)).Decision.Action);
    }

    [Fact]
    public void LoadAboveTheBandAddsOnlyAfterItHasLasted()
    {
        MetadataServerSample[] busy = [Server("a", 0.95, 100, removable: false)];
        var (first, state) = MetadataScalingPolicy.Decide(busy, 1, 2, false, Options, MetadataScalingState.Initial, T0);
        Assert.Equal(MetadataScalingAction.None, first.Action);
        var (spike, _) = MetadataScalingPolicy.Decide([Server("a", 0.1, 100, removable: false)], 1, 2, false, Options, state, T0 + TimeSpan.FromSeconds(3));
        Assert.Equal(MetadataScalingAction.None, spike.Action);

        var (held, after) = MetadataScalingPolicy.Decide(busy, 1, 2, false, Options, state, T0 + TimeSpan.FromSeconds(5));
        Assert.Equal(MetadataScalingAction.AddServer, held.Action);
        Assert.Contains("95 % of a core", held.Reason, StringComparison.Ordinal);
        Assert.Equal(T0 + TimeSpan.FromSeconds(5), after.LastAction);
    }

    [Fact]
    public void ADrainWaitsForTheCooldownBelowTheBandAndSinceTheLastAction()
    {
        MetadataServerSample[] idle = [Server("a", 0.01, 0, removable: false), Server("b", 0.01, 0, jobs: 0)];

        // Below the band for 59 s: nothing yet.
        var state = MetadataScalingState.Initial;
        (var decision, state) = MetadataScalingPolicy.Decide(idle, 1, 2, false, Options, state, T0);
        (decision, state) = MetadataScalingPolicy.Decide(idle, 1, 2, false, Options, state, T0 + TimeSpan.FromSeconds(59));
        Assert.Equal(MetadataScalingAction.None, decision.Action);

        // A server was added 30 s ago: the cooldown counts from there too.
        var recent = state with { LastAction = T0 + TimeSpan.FromSeconds(30) };
        Assert.Equal(MetadataScalingAction.None, MetadataScalingPolicy.Decide(idle, 1, 2, false, Options, recent, T0 + TimeSpan.FromSeconds(61)).Decision.Action);

        (decision, _) = MetadataScalingPolicy.Decide(idle, 1, 2, false, Options, state, T0 + TimeSpan.FromSeconds(60));
        Assert.Equal(MetadataScalingAction.DrainServer, decision.Action);
        Assert.Equal("b", decision.Address);
    }

    [Fact]
    public void NothingIsDecidedWhileAServerJoinsOrBeforeTheFirstReading()
    {
        MetadataServerSample[] busy = [Server("a", 0.95, 9_000, removable: false)];
        var state = new MetadataScalingState(T0, null, null);
        Assert.Equal(MetadataScalingAction.None, MetadataScalingPolicy.Decide(busy, 1, 3, joining: true, Options, state, T0 + TimeSpan.FromMinutes(1)).Decision.Action);
        Assert.Equal(MetadataScalingAction.None, MetadataScalingPolicy.Decide([new MetadataServerSample("a", false, null, null, 0, false)], 1, 3, false, Options, state, T0 + TimeSpan.FromMinutes(1)).Decision.Action);
    }

    [Fact]
    public void BadBandsAreRefused()
    {
        Assert.Throws<ArgumentException>(() => (Options with { CpuLow = 0.8 }).Validate());
        Assert.Throws<ArgumentException>(() => (Options with { RequestsHigh = 10 }).Validate());
        Assert.Throws<ArgumentException>(() => (Options with { SpareAddresses = ["nowhere"] }).Validate());
        Assert.Throws<ArgumentException>(() => new ControllerOptions { MetadataAddress = "127.0.0.1:1", MetadataScaling = Options with { SpareAddresses = ["127.0.0.1:1"] } }.Validate());
    }
}
