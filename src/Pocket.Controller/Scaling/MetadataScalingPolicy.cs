using System.Globalization;

namespace Pocket.Controller.Scaling;

/// <summary>
/// How the controller scales the metadata plane (<see cref="ControllerOptions.MetadataScaling"/>): each metadata
/// server's CPU and job request rate are kept inside a band, like the storage nodes' utilisation. The servers started
/// with the controller are the minimum (the first is never drained); <see cref="SpareAddresses"/> are where more may be
/// started, so the maximum is the first servers plus the spare addresses.
/// </summary>
public sealed record MetadataScalingOptions
{
    /// <summary>
    /// host:port of each further metadata server the controller may start, in order. Storage nodes must be told these
    /// addresses as well as the running servers' (they join a server that appears there within a heartbeat round).
    /// </summary>
    public IReadOnlyList<string> SpareAddresses { get; init; } = [];

    /// <summary>Below this CPU per serving server (a fraction of one core), with requests below theirs too, one server drains.</summary>
    public double CpuLow { get; init; } = 0.3;

    /// <summary>Above this CPU per serving server (a fraction of one core), a server is added.</summary>
    public double CpuHigh { get; init; } = 0.7;

    /// <summary>
    /// Below this many job requests per second per serving server (with CPU below its bound too), one server drains. The
    /// defaults are 30 % and 70 % of the ~45,000 requests a second one core served at ~22 us of server CPU per metadata
    /// op (docs/benchmarks.md, "Metadata plane: 1 vs 2 servers"), the same band as the CPU's.
    /// </summary>
    public double RequestsLow { get; init; } = 13_000;

    /// <summary>Above this many job requests per second per serving server, a server is added.</summary>
    public double RequestsHigh { get; init; } = 31_000;

    /// <summary>How long the load must stay above the band before a server is added (a one-second spike starts nothing).</summary>
    public TimeSpan UpAfter { get; init; } = TimeSpan.FromSeconds(5);

    /// <summary>How long the load must stay below the band, and the last action lie back, before a server drains.</summary>
    public TimeSpan Cooldown { get; init; } = TimeSpan.FromSeconds(60);

    /// <summary>
    /// How long a started server waits for the storage nodes to join it before it takes jobs anyway (the nodes join
    /// within a heartbeat round when they know its address; one that does not is named in the event).
    /// </summary>
    public TimeSpan JoinTimeout { get; init; } = TimeSpan.FromSeconds(30);

    /// <summary>Throws <see cref="ArgumentException"/> naming the first bad setting.</summary>
    public void Validate()
    {
        if (!(CpuLow >= 0 && CpuLow < CpuHigh) || !(RequestsLow >= 0 && RequestsLow < RequestsHigh))
        {
            throw new ArgumentException("metadata scaling bands need 0 <= low < high (CPU as a fraction of one core, requests per second)");
        }

        if (UpAfter < TimeSpan.Zero || Cooldown < TimeSpan.Zero || JoinTimeout <= TimeSpan.Zero)
        {
            throw new ArgumentException("metadata scaling up-after and cooldown must not be negative, the join timeout positive");
        }

        foreach (var address in SpareAddresses)
        {
            var colon = address?.LastIndexOf(':') ?? -1;
            if (colon <= 0 || !int.TryParse(address.AsSpan(colon + 1), CultureInfo.InvariantCulture, out var port) || port is <= 0 or > 65535)
            {
                throw new ArgumentException($"spare metadata address '{address}' is not host:port (a server is started at that port later)");
            }
        }
    }
}

/// <summary>One metadata server as the policy sees it.</summary>
/// <param name="Address">host:port.</param>
/// <param name="Draining">It is draining (placing no new jobs); else it serves.</param>
/// <param name="Cpu">CPU per second as a fraction of one core; null before its first reading.</param>
/// <param name="RequestsPerSecond">Job requests per second; null before its first reading.</param>
/// <param name="Jobs">The controller's live jobs on it.</param>
/// <param name="Removable">The controller may stop it (it started it, and it is not the first server).</param>
public readonly record struct MetadataServerSample(string Address, bool Draining, double? Cpu, double? RequestsPerSecond, int Jobs, bool Removable);

/// <summary>What the metadata-plane policy wants done.</summary>
public enum MetadataScalingAction
{
    /// <summary>Nothing.</summary>
    None,

    /// <summary>Start a server at the next spare address.</summary>
    AddServer,

    /// <summary>Take the draining server <see cref="MetadataScalingDecision.Address"/> back into service (the load is back).</summary>
    ResumeServer,

    /// <summary>Drain <see cref="MetadataScalingDecision.Address"/>: no new jobs, stopped when its jobs have ended.</summary>
    DrainServer,
}

/// <summary>One decision with its reason (the event's text).</summary>
public sealed record MetadataScalingDecision(MetadataScalingAction Action, string? Address, string Reason)
{
    /// <summary>No action.</summary>
    public static MetadataScalingDecision None { get; } = new(MetadataScalingAction.None, null, string.Empty);
}

/// <summary>What the policy remembers between evaluations.</summary>
/// <param name="AboveSince">Since when the load has been above the band (null: it is not).</param>
/// <param name="BelowSince">Since when the load has been below the band (null: it is not).</param>
/// <param name="LastAction">When the last server was added, resumed or drained.</param>
public sealed record MetadataScalingState(DateTimeOffset? AboveSince, DateTimeOffset? BelowSince, DateTimeOffset? LastAction)
{
    /// <summary>Nothing yet.</summary>
    public static MetadataScalingState Initial { get; } = new(null, null, null);
}

/// <summary>
/// The metadata plane's scaling policy as a pure function (samples, settings, clock and remembered state in; one
/// decision out), run by the controller each telemetry tick and by the simulator each simulated second. The load is
/// the mean over serving servers (draining ones take no new jobs) of CPU (a fraction of one core) and job requests
/// per second:
/// <list type="bullet">
/// <item>above the band (either above its high bound) for <see cref="MetadataScalingOptions.UpAfter"/>: a draining
/// server is taken back first (it is running and its nodes are there), else one server is started while there are
/// fewer than the maximum;</item>
/// <item>below the band (both below their low bounds) for the cooldown, and the cooldown since the last action: one
/// removable server drains, the one with the fewest jobs (then requests, then the last started), unless the load
/// spread over one server fewer would be above the band (the next evaluation would add it back).</item>
/// </list>
/// One action per evaluation, none while a server is joining.
/// </summary>
public static class MetadataScalingPolicy
{
    /// <summary>Decides (see the class); <paramref name="joining"/>: a server started earlier has not yet been joined by the nodes.</summary>
    public static (MetadataScalingDecision Decision, MetadataScalingState State) Decide(
        IReadOnlyList<MetadataServerSample> servers,
        int minServers,
        int maxServers,
        bool joining,
        MetadataScalingOptions options,
        MetadataScalingState state,
        DateTimeOffset now)
    {
        var serving = servers.Where(s => !s.Draining).ToList();
        var measured = serving.Where(s => s.Cpu is not null && s.RequestsPerSecond is not null).ToList();
        if (joining || measured.Count == 0)
        {
            return (MetadataScalingDecision.None, state with { AboveSince = null, BelowSince = null });
        }

        var cpu = measured.Average(s => s.Cpu!.Value);
        var requests = measured.Average(s => s.RequestsPerSecond!.Value);
        var above = cpu > options.CpuHigh || requests > options.RequestsHigh;
        var below = cpu < options.CpuLow && requests < options.RequestsLow;
        state = state with { AboveSince = above ? state.AboveSince ?? now : null, BelowSince = below ? state.BelowSince ?? now : null };
        var load = Describe(cpu, requests, serving.Count);

        if (above && now - state.AboveSince >= options.UpAfter)
        {
            var band = string.Create(CultureInfo.InvariantCulture, $"above the band ({Percent(options.CpuHigh)} of a core, {options.RequestsHigh:0} req/s) for {(now - state.AboveSince!.Value).TotalSeconds:0} s");
            if (servers.Where(s => s.Draining).OrderByDescending(s => s.Jobs).FirstOrDefault() is { Address: not null } draining)
            {
                return (new MetadataScalingDecision(MetadataScalingAction.ResumeServer, draining.Address, $"{load}, {band}: {draining.Address} stops draining and takes jobs again"), state with { AboveSince = null, LastAction = now });
            }

            if (servers.Count < maxServers)
            {
                return (new MetadataScalingDecision(MetadataScalingAction.AddServer, null, string.Create(CultureInfo.InvariantCulture, $"{load}, {band}: starting metadata server {servers.Count + 1} of at most {maxServers}")), state with { AboveSince = null, LastAction = now });
            }

            return (MetadataScalingDecision.None, state);
        }

        if (below && now - state.BelowSince >= options.Cooldown && (state.LastAction is null || now - state.LastAction >= options.Cooldown) && serving.Count > minServers)
        {
            // The same load over one server fewer must stay inside the band, or the next evaluation would add it back.
            var fewer = serving.Count - 1;
            var cpuAfter = cpu * measured.Count / Math.Max(1, Math.Min(fewer, measured.Count));
            var requestsAfter = requests * measured.Count / Math.Max(1, Math.Min(fewer, measured.Count));
            if (cpuAfter > options.CpuHigh || requestsAfter > options.RequestsHigh)
            {
                return (MetadataScalingDecision.None, state);
            }

            var candidate = serving
                .Select((s, i) => (Server: s, Order: i))
                .Where(s => s.Server.Removable)
                .OrderBy(s => s.Server.Jobs)
                .ThenBy(s => s.Server.RequestsPerSecond ?? 0)
                .ThenByDescending(s => s.Order)
                .Select(s => s.Server)
                .FirstOrDefault();
            if (candidate.Address is null)
            {
                return (MetadataScalingDecision.None, state);
            }

            var reason = string.Create(CultureInfo.InvariantCulture, $"{load}, below the band ({Percent(options.CpuLow)} of a core, {options.RequestsLow:0} req/s) for {(now - state.BelowSince!.Value).TotalSeconds:0} s: {candidate.Address} ({candidate.Jobs} job{(candidate.Jobs == 1 ? "" : "s")}) takes no new jobs and stops when they have ended");
            return (new MetadataScalingDecision(MetadataScalingAction.DrainServer, candidate.Address, reason), state with { BelowSince = null, LastAction = now });
        }

        return (MetadataScalingDecision.None, state);
    }

    private static string Describe(double cpu, double requests, int serving) =>
        string.Create(CultureInfo.InvariantCulture, $"{Percent(cpu)} of a core and {requests:0} req/s per serving metadata server ({serving} serving)");

    private static string Percent(double fraction) => (fraction * 100).ToString("0.#", CultureInfo.InvariantCulture) + " %";
}
