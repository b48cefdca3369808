using System.Globalization;
using Microsoft.Extensions.Logging;
using Pocket.Client;
using Pocket.Controller.Jobs;
using Pocket.Controller.Provisioning;
using Pocket.Controller.Sizing;
using Pocket.Protocol;

namespace Pocket.Controller.Scaling;

/// <summary>
/// Settings of the <see cref="Autoscaler"/>: the band (80-95 %; the paper's 60-80 % left a third of the nodes idle,
/// docs/controller.md), node limits, the cooldown and the lead.
/// </summary>
public sealed record AutoscalerOptions
{
    /// <summary>
    /// When every resource of a tier stays below this fraction for <see cref="Cooldown"/>, the nodes its load does not
    /// need (at <see cref="Upper"/>) are drained and removed.
    /// </summary>
    public double Lower { get; init; } = 0.8;

    /// <summary>When any resource of a tier goes above this fraction, now or <see cref="Lead"/> ahead, nodes of that tier are added.</summary>
    public double Upper { get; init; } = 0.95;

    /// <summary>Live storage nodes never fewer than this (the paper always runs two).</summary>
    public int MinNodes { get; init; } = 2;

    /// <summary>Live storage nodes never more than this.</summary>
    public int MaxNodes { get; init; } = 16;

    /// <summary>Quiet time after each action, and how long a tier must stay below the band before it shrinks.</summary>
    public TimeSpan Cooldown { get; init; } = TimeSpan.FromSeconds(5);

    /// <summary>
    /// How far ahead a tier's rising load is projected (its rise per second times this): about the time a node takes
    /// from the decision to serving, so nodes are added before a ramp outgrows the tier, not after.
    /// </summary>
    public TimeSpan Lead { get; init; } = TimeSpan.FromSeconds(5);

    /// <summary>How often utilisation is sampled and the policy evaluated.</summary>
    public TimeSpan Interval { get; init; } = TimeSpan.FromSeconds(1);

    /// <summary>Network bandwidth of one node (rx + tx), bytes/s, per tier; tiers not listed use the sizing node class.</summary>
    public IReadOnlyDictionary<NodeTier, double> NodeBandwidthBytesPerSecond { get; init; } = new Dictionary<NodeTier, double>();

    /// <summary>Capacity of nodes the autoscaler starts; null: the sizing node class of the tier.</summary>
    public long? NewNodeCapacityBytes { get; init; }

    /// <summary>Resources the policy watches; all by default (in-process test clusters share one process's CPU, so they watch capacity only).</summary>
    public ScalingResources Resources { get; init; } = ScalingResources.All;

    /// <summary>How long a drain may take before the autoscaler gives up on it (the node then stays draining).</summary>
    public TimeSpan DrainTimeout { get; init; } = TimeSpan.FromMinutes(10);

    /// <summary>Throws <see cref="ArgumentException"/> naming the first bad setting.</summary>
    public void Validate()
    {
        if (!(Lower > 0) || !(Upper <= 1) || !(Lower < Upper))
        {
            throw new ArgumentException("autoscaler bounds need 0 < lower < upper <= 1");
        }

        if (MinNodes < 1 || MaxNodes < MinNodes)
        {
            throw new ArgumentException("autoscaler needs 1 <= min nodes <= max nodes");
        }

        if (Cooldown < TimeSpan.Zero || Lead < TimeSpan.Zero || Interval <= TimeSpan.Zero || DrainTimeout <= TimeSpan.Zero)
        {
            throw new ArgumentException("autoscaler cooldown and lead must be >= 0, interval and drain timeout positive");
        }

        if (NodeBandwidthBytesPerSecond.Values.Any(b => !(b > 0) || !double.IsFinite(b)))
        {
            throw new ArgumentException("node bandwidth must be a positive number of bytes/s");
        }

        if (NewNodeCapacityBytes is <= 0)
        {
            throw new ArgumentException("new node capacity must be positive");
        }
    }
}

/// <summary>
/// Carries out the policy's decisions on a live cluster after each telemetry sample: adds nodes through the
/// provisioner; removes one by taking it out of every job's weight map, draining it (its blocks move while
/// readers keep reading) and stopping it once drained. Every decision and its outcome is an event.
/// </summary>
public sealed class Autoscaler
{
    private readonly MetadataPlane _plane;
    private readonly JobRegistry _registry;
    private readonly NodeInventory _inventory;
    private readonly IStorageProvisioner _provisioner;
    private readonly AutoscalerOptions _options;
    private readonly SizingOptions _sizing;
    private readonly TimeProvider _time;
    private readonly ClusterEventLog _events;
    private readonly ILogger _logger;
    private readonly Lock _lock = new();
    private AutoscalerState _state = AutoscalerState.Initial;
    private Task _action = Task.CompletedTask;

    // The last action a tick has seen finished. The first tick after an action ends may carry a sample read while it
    // ran (before its node served, or before its drain ended): deciding on it would add or remove a second node for
    // the same load, since scale-ups no longer wait out the cooldown. That tick is skipped.
    private Task _seenFinished = Task.CompletedTask;

    internal Autoscaler(MetadataPlane plane, JobRegistry registry, NodeInventory inventory, IStorageProvisioner provisioner, AutoscalerOptions options, SizingOptions sizing, TimeProvider time, ClusterEventLog events, ILogger logger)
    {
        options.Validate();
        _plane = plane;
        _registry = registry;
        _inventory = inventory;
        _provisioner = provisioner;
        _options = options;
        _sizing = sizing;
        _time = time;
        _events = events;
        _logger = logger;
    }

    /// <summary>The settings in use.</summary>
    public AutoscalerOptions Options => _options;

    /// <summary>Network bandwidth of one node of <paramref name="tier"/>, bytes/s.</summary>
    public double Bandwidth(NodeTier tier) =>
        _options.NodeBandwidthBytesPerSecond.TryGetValue(tier, out var b) ? b : (_sizing.ClassOf(tier)?.BandwidthBitsPerSecond ?? 8e9) / 8;

    /// <summary>Lets the autoscaler remove a node it did not start (the provisioner must be able to stop it).</summary>
    public void Adopt(ProvisionedNode node)
    {
        ArgumentNullException.ThrowIfNull(node);
        _inventory.Own(node);
    }

    /// <summary>The action in progress (completed when idle).</summary>
    internal Task Current
    {
        get
        {
            lock (_lock)
            {
                return _action;
            }
        }
    }

    internal Task OnSampleAsync(IReadOnlyList<NodeSample> samples, CancellationToken cancellationToken)
    {
        ScalingDecision decision;
        var jobs = RegisteredJobs();
        lock (_lock)
        {
            // One action at a time; the cooldown runs from its end as well as its start. (Simulation/ClusterSimulator mirrors
            // this loop, but for the skipped tick below: its samples are computed after an action ends, never before.)
            if (!_action.IsCompleted)
            {
                return Task.CompletedTask;
            }

            if (!ReferenceEquals(_action, _seenFinished))
            {
                _seenFinished = _action;
                return Task.CompletedTask;
            }

            var now = _time.GetUtcNow();
            (decision, _state) = AutoscalerPolicy.Decide(samples, _inventory.OwnedIds(), _options, Bandwidth, _state, now, jobs);
            if (decision.Action == ScalingAction.None)
            {
                return Task.CompletedTask;
            }

            _action = Task.Run(() => ActAsync(decision, cancellationToken), CancellationToken.None);
        }

        return Task.CompletedTask;
    }

    /// <summary>
    /// The running jobs as the policy reads them: a job that declared its peak throughput (or its functions, which sizing
    /// turns into one) declares that; a job registered without hints declares nothing, so its tier keeps the band.
    /// </summary>
    private List<RegisteredJob> RegisteredJobs() =>
        [.. _registry.Jobs.Select(j => new RegisteredJob(
            j.Requirement.Tier,
            j.RegisteredAt,
            j.Hints.PeakThroughputBitsPerSecond is > 0 || j.Hints.Functions is > 0 ? j.Requirement.ThroughputBitsPerSecond : null,
            j.Hints.CapacityBytes is > 0 ? j.Hints.CapacityBytes : null))];

    /// <summary>
    /// Adds a node of <paramref name="tier"/> now, as a scale-up decision would (from the warm pool when it has one,
    /// unless <paramref name="useWarmPool"/> is false), and returns it once the metadata server lists it live. Runs
    /// as the autoscaler's one action: it waits for an action in progress.
    /// </summary>
    public Task<ProvisionedNode> ScaleUpAsync(NodeTier tier, string reason, bool useWarmPool = true, CancellationToken cancellationToken = default) =>
        RunExclusiveAsync(() => AddAsync(new ScalingDecision(ScalingAction.AddNode, tier, null, reason), useWarmPool, cancellationToken));

    /// <summary>
    /// Drains <paramref name="nodeId"/> (its blocks move while readers keep reading), stops it and returns the bytes
    /// moved. The node must be one the autoscaler may stop (it started or adopted it). Runs as the autoscaler's one action,
    /// so concurrent removals of one node run one after the other: the later ones find it gone and return 0.
    /// </summary>
    /// <exception cref="ArgumentException">The autoscaler cannot stop that node.</exception>
    public Task<long> RemoveNodeAsync(uint nodeId, string reason, CancellationToken cancellationToken = default)
    {
        if (!_inventory.Owns(nodeId))
        {
            throw new ArgumentException($"node {nodeId} was not started or adopted by the autoscaler", nameof(nodeId));
        }

        return RunExclusiveAsync(() => RemoveAsync(new ScalingDecision(ScalingAction.RemoveNode, NodeTier.Dram, nodeId, reason), cancellationToken));
    }

    private async Task<T> RunExclusiveAsync<T>(Func<Task<T>> action)
    {
        while (true)
        {
            Task previous;
            Task<T>? started = null;
            lock (_lock)
            {
                previous = _action;
                if (previous.IsCompleted)
                {
                    // Run, not called inline: the action must not start under the lock.
                    started = Task.Run(action, CancellationToken.None);
                    _action = started;
                }
            }

            if (started is not null)
            {
                try
                {
                    return await started.ConfigureAwait(false);
                }
                finally
                {
                    lock (_lock)
                    {
                        _state = _state with { LastAction = _time.GetUtcNow() };
                    }
                }
            }

            await previous.ConfigureAwait(ConfigureAwaitOptions.SuppressThrowing);
        }
    }

    private async Task ActAsync(ScalingDecision decision, CancellationToken cancellationToken)
    {
        try
        {
            if (decision.Action == ScalingAction.AddNode)
            {
                // Started together: the load they are for is expected by the time one node starts.
                var adds = Enumerable.Range(0, Math.Max(1, decision.Count))
                    .Select(i => AddAsync(i == 0 ? decision : decision with { Reason = $"{decision.Reason} ({i + 1} of {decision.Count})" }, useWarmPool: true, cancellationToken))
                    .ToList();
                await Task.WhenAll(adds).ConfigureAwait(false);
            }
            else
            {
                // One drain after the other: a node being drained must not be the target of another's blocks.
                foreach (var id in decision.NodeIds.Count > 0 ? decision.NodeIds : [decision.NodeId!.Value])
                {
                    await RemoveAsync(decision with { NodeId = id }, cancellationToken).ConfigureAwait(false);
                }
            }
        }
        catch (Exception ex) when (ex is not OperationCanceledException || !cancellationToken.IsCancellationRequested)
        {
            Event("scale-failed", decision.NodeId, $"{decision.Action} ({decision.Reason}) failed: {ex.Message}");
        }
        catch (OperationCanceledException)
        {
            // The controller is stopping.
        }
        finally
        {
            lock (_lock)
            {
                _state = _state with { LastAction = _time.GetUtcNow() };
            }
        }
    }

    private async Task<ProvisionedNode> AddAsync(ScalingDecision decision, bool useWarmPool, CancellationToken cancellationToken)
    {
        Event("scale-up", null, decision.Reason);
        var tier = NodeTierNames.Name(decision.Tier);
        if (useWarmPool && await _inventory.TryClaimPooledAsync(decision.Tier, cancellationToken).ConfigureAwait(false) is { } pooled)
        {
            _inventory.Own(pooled);
            Event("node-started", pooled.NodeId, $"{tier} node at {pooled.Address ?? "pending"} (provisioner handle {pooled.Handle}), taken from the warm pool{await SpreadAsync(pooled, cancellationToken).ConfigureAwait(false)}");
            return pooled;
        }

        var capacity = _options.NewNodeCapacityBytes ?? _sizing.ClassOf(decision.Tier)?.CapacityBytes
            ?? throw new ProvisioningException($"no node class for tier {decision.Tier}");
        var node = await _provisioner.StartNodeAsync(new NodeRequest(decision.Tier, capacity), cancellationToken).ConfigureAwait(false);
        _inventory.Own(node);
        Event("node-started", node.NodeId, $"{tier} node at {node.Address ?? "pending"} (provisioner handle {node.Handle}){await SpreadAsync(node, cancellationToken).ConfigureAwait(false)}");
        return node;
    }

    /// <summary>Running jobs of the node's tier take the new node too (their new blocks); the event says how many.</summary>
    private async Task<string> SpreadAsync(ProvisionedNode node, CancellationToken cancellationToken)
    {
        if (node.NodeId is not { } id)
        {
            // A node whose id is not known yet (a pod still registering) is taken by jobs registered after it.
            return "";
        }

        var jobs = await _registry.SpreadOverNodeAsync(id, node.Tier, cancellationToken).ConfigureAwait(false);
        return jobs == 0 ? "" : $"; {jobs} running job(s) now place new blocks on it";
    }

    private async Task<long> RemoveAsync(ScalingDecision decision, CancellationToken cancellationToken)
    {
        var id = decision.NodeId!.Value;
        ProvisionedNode? node;
        // Checked again inside the one action: a removal that ran before this one (a concurrent call, or the
        // policy's own) may have stopped the node since the caller checked.
        if (!_inventory.TryGetOwned(id, out node))
        {
            return 0;
        }

        Event("scale-down", id, decision.Reason);

        // Out of every job first (weight map, shares, allocation), so nothing new is planned onto the node and no job
        // lists it once it is gone; the drain then refuses new blocks anyway.
        await _registry.ExcludeNodesAsync(new HashSet<uint> { id }, cancellationToken).ConfigureAwait(false);

        await _plane.DrainNodeAsync(id, cancellationToken).ConfigureAwait(false);
        using var deadline = new CancellationTokenSource(_options.DrainTimeout, _time);
        using var linked = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken, deadline.Token);
        NodeInfo? info;
        while (true)
        {
            info = (await _plane.GetNodesAsync(linked.Token).ConfigureAwait(false)).SingleOrDefault(n => n.Id == id);
            if (info is null || info.State is NodeState.Drained or NodeState.Dead)
            {
                break;
            }

            await Task.Delay(TimeSpan.FromMilliseconds(100), _time, linked.Token).ConfigureAwait(false);
        }

        if (info?.State == NodeState.Dead)
        {
            Event("scale-failed", id, $"node {id} died while draining; objects not yet moved are lost");
        }
        else
        {
            Event("node-drained", id, string.Create(CultureInfo.InvariantCulture, $"{info?.MovedBytes ?? 0} bytes moved to other nodes"), info?.MovedBytes ?? 0);
        }

        await _provisioner.StopNodeAsync(node, cancellationToken).ConfigureAwait(false);
        _inventory.Release(id);

        Event("node-stopped", id, $"node {node.Handle} stopped after its drain");
        return info?.MovedBytes ?? 0;
    }

    private void Event(string kind, uint? node, string reason, long? movedBytes = null)
    {
        ControllerLog.ScalingEvent(_logger, kind, node?.ToString(CultureInfo.InvariantCulture) ?? "-", reason);
        _events.Add(new ClusterEvent(_time.GetUtcNow(), kind, node, reason) { MovedBytes = movedBytes });
    }
}
