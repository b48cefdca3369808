using System.Globalization;
using Pocket.Controller.Contracts;
using Pocket.Controller.Scaling;
using Pocket.Protocol;

namespace Pocket.Controller.Simulation;

/// <summary>Something that happened in a simulation: a scaling decision with its reason, a node ready or stopped, a job starting or ending.</summary>
/// <param name="Second">Simulated second.</param>
/// <param name="Kind">scale-up, node-started, scale-down, node-stopped, job-started, job-ended, pool-added.</param>
/// <param name="NodeId">The node concerned, when there is one.</param>
/// <param name="Reason">Why, in words (for decisions: the policy's own reason).</param>
public sealed record SimulationEvent(int Second, string Kind, uint? NodeId, string Reason);

/// <summary>One simulated second, all tiers together.</summary>
/// <param name="Second">The second.</param>
/// <param name="DemandBitsPerSecond">What the running jobs ask for.</param>
/// <param name="ServedBitsPerSecond">What the serving nodes give them.</param>
/// <param name="SupplyBitsPerSecond">What the serving nodes could give.</param>
/// <param name="DemandBytes">Bytes the running jobs hold.</param>
/// <param name="Provisioned">Nodes paid for: starting, serving and draining, and the warm pool's.</param>
/// <param name="Serving">Live nodes.</param>
/// <param name="Starting">Nodes started but not serving yet.</param>
/// <param name="Draining">Nodes being drained before they stop.</param>
/// <param name="Oracle">The fewest nodes that could meet this second's demand (at least the policy's minimum).</param>
/// <param name="Short">Whether some job asked for more throughput than its tier's serving nodes could give.</param>
/// <param name="Standby">Warm-pool nodes standing by or starting as replacements (counted in <paramref name="Provisioned"/>).</param>
public sealed record SimulationSecond(
    int Second,
    double DemandBitsPerSecond,
    double ServedBitsPerSecond,
    double SupplyBitsPerSecond,
    double DemandBytes,
    int Provisioned,
    int Serving,
    int Starting,
    int Draining,
    int Oracle,
    bool Short,
    int Standby = 0);

/// <summary>What a simulation measured.</summary>
/// <param name="Trace">The trace that ran (with any overrides applied).</param>
/// <param name="Seconds">Simulated seconds.</param>
/// <param name="NodeSeconds">Sum over the seconds of the provisioned nodes (starting, draining and warm-pool ones included).</param>
/// <param name="OracleNodeSeconds">Sum over the seconds of the fewest nodes that could meet the demand.</param>
/// <param name="ShortSeconds">Seconds in which some job asked for more throughput than the serving nodes of its tier could give.</param>
/// <param name="CapacityShortSeconds">Seconds in which some tier's jobs held more bytes than its serving nodes store.</param>
/// <param name="LongestShortStreak">The longest run of consecutive short seconds.</param>
/// <param name="ScaleUps">Nodes added.</param>
/// <param name="ScaleDowns">Nodes removed.</param>
/// <param name="Timeline">Every second.</param>
/// <param name="Events">Decisions (with the policy's reasons), nodes ready and stopped, jobs starting and ending.</param>
public sealed record SimulationResult(
    SimulationTrace Trace,
    int Seconds,
    double NodeSeconds,
    double OracleNodeSeconds,
    int ShortSeconds,
    int CapacityShortSeconds,
    int LongestShortStreak,
    int ScaleUps,
    int ScaleDowns,
    IReadOnlyList<SimulationSecond> Timeline,
    IReadOnlyList<SimulationEvent> Events)
{
    /// <summary>Node-seconds provisioned per node-second needed.</summary>
    public double Ratio => OracleNodeSeconds > 0 ? NodeSeconds / OracleNodeSeconds : double.NaN;

    /// <summary>The metadata plane over the run (<see cref="SimulationTrace.Metadata"/>).</summary>
    public MetadataPlaneResult? Metadata { get; init; }
}

/// <summary>
/// Runs <see cref="AutoscalerPolicy.Decide"/>, the code the live <see cref="Autoscaler"/> runs, against a job trace on a
/// simulated clock that steps one second at a time. A simulated cluster turns each job's demand into the per-node
/// samples real telemetry would report: a tier's traffic and bytes are spread evenly over its live nodes; network
/// rx + tx is the traffic served (never more than the nodes' bandwidth); CPU is proportional to traffic; used bytes
/// against capacity. As in the live loop, one action runs at a time: an added node serves after the start delay, a
/// removed node drains (reported as draining, serving nothing) for the drain time and then stops; the policy is not
/// consulted while an action runs, and its cooldown runs from the action's end. With a warm pool
/// (<see cref="SimulationTrace.WarmPool"/>, full when the run starts) a scale-up takes a pool node, which serves after
/// the warm delay, and the pool starts a replacement in the background (the start delay, one at a time per tier); pool
/// nodes are paid for but serve nothing and are not sampled. Deterministic: same trace, same result.
/// </summary>
public static class ClusterSimulator
{
    private const double Epsilon = 1e-9;

    /// <summary>Where the simulated clock starts.</summary>
    public static readonly DateTimeOffset Epoch = DateTimeOffset.UnixEpoch;

    private enum Phase
    {
        Starting,
        Live,
        Draining,
    }

    /// <summary>Simulates <paramref name="trace"/>.</summary>
    public static SimulationResult Run(SimulationTrace trace)
    {
        ArgumentNullException.ThrowIfNull(trace);
        trace.Policy.Validate();
        if (trace.WarmPool is < 0 or > SimulationTrace.MaxWarmPool || trace.WarmDelay < TimeSpan.Zero)
        {
            throw new ArgumentException($"the warm pool must be 0-{SimulationTrace.MaxWarmPool} nodes per tier and its delay not negative");
        }

        var policy = trace.Policy;
        var nodes = new List<SimNode>();
        uint nextId = 1;
        var first = true;
        foreach (var (tier, count) in trace.InitialNodes.OrderBy(n => n.Key))
        {
            // The cluster starts with at least the policy's minimum (the extra nodes in the first tier), as `pocket up` does.
            var extra = first ? Math.Max(0, policy.MinNodes - trace.InitialNodes.Values.Sum()) : 0;
            first = false;
            for (var i = 0; i < count + extra; i++)
            {
                nodes.Add(new SimNode(nextId++, tier) { Phase = Phase.Live });
            }
        }

        var tiers = trace.NodeClasses.Keys.Where(t => trace.InitialNodes.ContainsKey(t) || trace.Jobs.Any(j => j.Tier == t)).OrderBy(t => t).ToList();
        var pools = tiers.ToDictionary(t => t, _ => new SimPool { Ready = trace.WarmPool });
        var lastEnd = (int)Math.Ceiling(trace.Jobs.Max(j => j.End));
        var quiet = (int)Math.Ceiling(trace.StartDelay.TotalSeconds + trace.DrainTime.TotalSeconds + (2 * policy.Cooldown.TotalSeconds)) + 2;
        var limit = trace.Duration ?? lastEnd + 3600;

        var timeline = new List<SimulationSecond>();
        var events = new List<SimulationEvent>();
        var metadata = new MetadataPlaneModel(trace.Metadata);
        var state = AutoscalerState.Initial;
        PendingAction? action = null;
        var lastDecision = 0;
        double nodeSeconds = 0, oracleSeconds = 0;
        int shortSeconds = 0, capacityShort = 0, streak = 0, longest = 0, ups = 0, downs = 0;
        var started = new bool[trace.Jobs.Count];
        var ended = new bool[trace.Jobs.Count];
        double Bandwidth(NodeTier tier) => trace.ClassOf(tier).BandwidthBitsPerSecond / 8;

        for (var t = 0; t < limit; t++)
        {
            // The run also goes on until the metadata plane is back at its minimum (or could have been): it drains a
            // cooldown after the load falls, later than the storage nodes, and a run that ended first showed no drain.
            if (trace.Duration is null && t >= lastEnd && action is null && pools.Values.All(p => p.RefillAt is null) && t - Math.Max(lastDecision, lastEnd) > quiet
                && (metadata.AtRest || t - lastEnd > metadata.SettleTime.TotalSeconds))
            {
                break;
            }

            var now = Epoch + TimeSpan.FromSeconds(t);
            if (action is { } running)
            {
                // A warm node of a batch serves at its own (earlier) time; the rest when they are ready.
                foreach (var node in running.Nodes.Where(n => n.Phase == Phase.Starting && n.ReadyAt <= t))
                {
                    node.Phase = Phase.Live;
                    events.Add(new SimulationEvent(t, "node-started", node.Id, $"{NodeTierNames.Name(node.Tier)} node {node.Id} serves after the {(node.Warm ? "warm delay (taken from the warm pool)" : "start delay")}"));
                }
            }

            if (action is { } done && done.DoneAt <= t)
            {
                foreach (var node in done.Nodes.Where(n => n.Phase == Phase.Draining))
                {
                    nodes.Remove(node);
                    events.Add(new SimulationEvent(t, "node-stopped", node.Id, $"node {node.Id} stopped after its drain"));
                }

                // As the live loop does: the cooldown runs from the end of an action as well as its start.
                state = state with { LastAction = Epoch + TimeSpan.FromSeconds(done.DoneAt) };
                action = null;
            }

            foreach (var (tier, pool) in pools)
            {
                if (pool.RefillAt is { } ready && ready <= t)
                {
                    pool.Ready++;
                    pool.RefillAt = null;
                    events.Add(new SimulationEvent(t, "pool-added", null, string.Create(CultureInfo.InvariantCulture, $"a {NodeTierNames.Name(tier)} node is standing by ({pool.Ready} of {trace.WarmPool} ready)")));
                }

                if (pool.RefillAt is null && pool.Ready < trace.WarmPool)
                {
                    pool.RefillAt = t + trace.StartDelay.TotalSeconds;
                }
            }

            for (var j = 0; j < trace.Jobs.Count; j++)
            {
                var job = trace.Jobs[j];
                if (!started[j] && t >= job.Start)
                {
                    started[j] = true;
                    var peak = job.Profile.Max(p => p.ThroughputBitsPerSecond);
                    var bytes = job.Profile.Max(p => p.CapacityBytes);
                    events.Add(new SimulationEvent(t, "job-started", null, $"{job.Name} on {NodeTierNames.Name(job.Tier)}: up to {Units.FormatBitsPerSecond(peak)} and {Units.FormatBytes(bytes)} until {job.End.ToString("0.#", CultureInfo.InvariantCulture)} s"));
                }

                if (!ended[j] && t >= job.End)
                {
                    ended[j] = true;
                    events.Add(new SimulationEvent(t, "job-ended", null, $"{job.Name} ended; its data is freed"));
                }
            }

            // The metadata plane serves the running jobs' requests (its own model; the storage policy never sees it).
            metadata.Step(t, [.. Enumerable.Range(0, trace.Jobs.Count).Where(j => started[j] && !ended[j]).Select(j => (j, trace.Jobs[j].At(t).ThroughputBitsPerSecond))], events);

            var samples = new List<NodeSample>();
            double demandAll = 0, servedAll = 0, supplyAll = 0, bytesAll = 0;
            var isShort = false;
            var isCapacityShort = false;
            var oracle = 0;
            foreach (var tier in tiers)
            {
                var nodeClass = trace.ClassOf(tier);
                double demand = 0, bytes = 0;
                for (var j = 0; j < trace.Jobs.Count; j++)
                {
                    var job = trace.Jobs[j];
                    if (job.Tier != tier)
                    {
                        continue;
                    }

                    var (bits, held) = job.At(t);
                    demand += bits * Noise(trace.Seed, j, t, job.Noise);
                    bytes += held;
                }

                var serving = nodes.Where(n => n.Tier == tier && n.Phase == Phase.Live).ToList();
                var supply = serving.Count * nodeClass.BandwidthBitsPerSecond;
                var served = Math.Min(demand, supply);
                if (demand > supply * (1 + Epsilon) && demand > Epsilon)
                {
                    isShort = true;
                }

                var storable = (double)serving.Count * nodeClass.CapacityBytes;
                if (bytes > storable * (1 + Epsilon) && bytes > 0)
                {
                    isCapacityShort = true;
                }

                oracle += (int)Math.Ceiling(Math.Max(demand / nodeClass.BandwidthBitsPerSecond, bytes / nodeClass.CapacityBytes) - Epsilon);
                demandAll += demand;
                servedAll += served;
                supplyAll += supply;
                bytesAll += bytes;

                var share = serving.Count > 0 ? served / 8 / serving.Count : 0;
                var used = serving.Count > 0 ? (long)Math.Min(bytes / serving.Count, nodeClass.CapacityBytes) : 0;
                var cpu = supply > 0 ? served / supply * nodeClass.CpuAtFullBandwidth : 0;
                foreach (var node in nodes.Where(n => n.Tier == tier && n.Phase != Phase.Starting))
                {
                    // A starting node has not registered yet, so telemetry does not list it; a draining one serves nothing.
                    samples.Add(node.Phase == Phase.Live
                        ? new NodeSample(now, node.Id, tier, NodeState.Live, nodeClass.CapacityBytes, used, cpu, share / 2, share / 2, 0)
                        : new NodeSample(now, node.Id, tier, NodeState.Draining, nodeClass.CapacityBytes, 0, 0, 0, 0, 0));
                }
            }

            capacityShort += isCapacityShort ? 1 : 0;
            oracle = Math.Max(oracle, policy.MinNodes);

            if (action is null)
            {
                var removable = nodes.Where(n => n.Phase == Phase.Live).Select(n => n.Id).ToHashSet();
                var registered = trace.Jobs.Where((_, j) => started[j] && !ended[j]).Select(job => job.Registration(Epoch)).ToList();
                (var decision, state) = AutoscalerPolicy.Decide(samples, removable, policy, Bandwidth, state, now, registered);
                if (decision.Action == ScalingAction.AddNode)
                {
                    // Nodes asked for together start together (the live loop starts them in parallel); the action ends
                    // when the slowest serves. Each takes a warm-pool node while the pool has one.
                    var added = new List<SimNode>();
                    double doneAt = t;
                    var anyWarm = false;
                    for (var i = 0; i < decision.Count; i++)
                    {
                        var node = new SimNode(nextId++, decision.Tier) { Phase = Phase.Starting };
                        nodes.Add(node);
                        added.Add(node);
                        var warm = pools.TryGetValue(decision.Tier, out var pool) && pool.Ready > 0;
                        if (warm)
                        {
                            // The claimed node leaves the pool; its replacement starts now, in the background.
                            pool!.Ready--;
                            pool.RefillAt ??= t + trace.StartDelay.TotalSeconds;
                        }

                        node.ReadyAt = t + (warm ? trace.WarmDelay : trace.StartDelay).TotalSeconds;
                        node.Warm = warm;
                        anyWarm |= warm;
                        doneAt = Math.Max(doneAt, node.ReadyAt);
                        events.Add(new SimulationEvent(t, "scale-up", node.Id, warm ? $"{decision.Reason}; taken from the warm pool" : decision.Reason));
                        ups++;
                    }

                    action = new PendingAction(added, doneAt, anyWarm);
                    lastDecision = t;
                }
                else if (decision.Action == ScalingAction.RemoveNode)
                {
                    var removed = new List<SimNode>();
                    foreach (var id in decision.NodeIds.Count > 0 ? decision.NodeIds : [decision.NodeId!.Value])
                    {
                        var node = nodes.Single(n => n.Id == id);
                        node.Phase = Phase.Draining;
                        removed.Add(node);
                        events.Add(new SimulationEvent(t, "scale-down", node.Id, decision.Reason));
                        downs++;
                    }

                    action = new PendingAction(removed, t + trace.DrainTime.TotalSeconds, Warm: false);
                    lastDecision = t;
                }
            }

            var starting = nodes.Count(n => n.Phase == Phase.Starting);
            var draining = nodes.Count(n => n.Phase == Phase.Draining);
            var standby = pools.Values.Sum(p => p.Ready + (p.RefillAt is null ? 0 : 1));
            timeline.Add(new SimulationSecond(t, demandAll, servedAll, supplyAll, bytesAll, nodes.Count + standby, nodes.Count - starting - draining, starting, draining, oracle, isShort, standby));
            nodeSeconds += nodes.Count + standby;
            oracleSeconds += oracle;
            if (isShort)
            {
                shortSeconds++;
                streak++;
                longest = Math.Max(longest, streak);
            }
            else
            {
                streak = 0;
            }
        }

        return new SimulationResult(trace, timeline.Count, nodeSeconds, oracleSeconds, shortSeconds, capacityShort, longest, ups, downs, timeline, events) { Metadata = metadata.Result() };
    }

    /// <summary>A job's demand factor at second <paramref name="t"/>: 1 ± noise, drawn from a hash of (seed, job, second) so runs repeat exactly.</summary>
    private static double Noise(ulong seed, int job, int t, double noise)
    {
        if (noise == 0)
        {
            return 1;
        }

        var x = seed ^ ((ulong)(uint)job << 32) ^ (uint)t;
        x += 0x9E3779B97F4A7C15UL;
        x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9UL;
        x = (x ^ (x >> 27)) * 0x94D049BB133111EBUL;
        x ^= x >> 31;
        var unit = (x >> 11) * (1.0 / (1UL << 53));
        return 1 + (noise * ((2 * unit) - 1));
    }

    private sealed class SimNode(uint id, NodeTier tier)
    {
        public uint Id { get; } = id;

        public NodeTier Tier { get; } = tier;

        public Phase Phase { get; set; }

        public double ReadyAt { get; set; }

        public bool Warm { get; set; }
    }

    private sealed record PendingAction(IReadOnlyList<SimNode> Nodes, double DoneAt, bool Warm);

    /// <summary>A tier's warm pool: nodes standing by, and when the replacement being started stands by too.</summary>
    private sealed class SimPool
    {
        public int Ready { get; set; }

        public double? RefillAt { get; set; }
    }
}
