using System.Globalization;
using Microsoft.Extensions.Logging;
using Pocket.Client;
using Pocket.Controller.Jobs;
using Pocket.Controller.Provisioning;
using Pocket.Controller.Sizing;
using Pocket.Protocol;

namespace Pocket.Controller.Scaling;

/// <summary>Settings of the warm pool: idle storage nodes kept running so a scale-up does not wait for a node to start.</summary>
public sealed record WarmPoolOptions
{
    /// <summary>Idle nodes kept ready per tier.</summary>
    public int NodesPerTier { get; init; } = 1;

    /// <summary>Tiers with a pool (the provisioner must start them).</summary>
    public IReadOnlyList<NodeTier> Tiers { get; init; } = [NodeTier.Dram];

    /// <summary>Capacity of pool nodes; null: the sizing node class of the tier (what a scale-up would start).</summary>
    public long? NodeCapacityBytes { get; init; }

    /// <summary>Wait after a failed start before the pool tries again.</summary>
    public TimeSpan RetryDelay { get; init; } = TimeSpan.FromSeconds(5);

    /// <summary>Time a started node may take to show up as standby when the provisioner does not know its id.</summary>
    public TimeSpan RegistrationTimeout { get; init; } = TimeSpan.FromSeconds(60);

    /// <summary>Throws <see cref="ArgumentException"/> naming the first bad setting.</summary>
    public void Validate()
    {
        if (NodesPerTier is < 1 or > 64)
        {
            throw new ArgumentException("warm pool nodes per tier must be between 1 and 64");
        }

        if (Tiers.Count == 0 || Tiers.Any(t => !Enum.IsDefined(t)))
        {
            throw new ArgumentException("warm pool needs at least one known tier");
        }

        if (NodeCapacityBytes is <= 0 || RetryDelay <= TimeSpan.Zero || RegistrationTimeout <= TimeSpan.Zero)
        {
            throw new ArgumentException("warm pool node capacity, retry delay and registration timeout must be positive");
        }
    }
}

/// <summary>
/// Idle storage nodes started as standby: registered with the metadata server and heartbeating, but held out of
/// placement (they get no blocks and the autoscaler does not count them). Claiming one activates it, which takes
/// one round trip; the pool then starts a replacement in the background. Disposing stops the unclaimed nodes.
/// </summary>
public sealed class WarmPool : IAsyncDisposable
{
    // How often the node list is read while a started node registers.
    private static readonly TimeSpan PollInterval = TimeSpan.FromMilliseconds(100);

    private readonly MetadataPlane _plane;
    private readonly IStorageProvisioner _provisioner;
    private readonly WarmPoolOptions _options;
    private readonly SizingOptions _sizing;
    private readonly TimeProvider _time;
    private readonly ClusterEventLog _events;
    private readonly ILogger _logger;
    private readonly Lock _lock = new();
    private readonly Dictionary<NodeTier, List<ProvisionedNode>> _ready = [];
    private readonly Dictionary<NodeTier, Task> _filling = [];
    private readonly CancellationTokenSource _stop = new();
    private Task _stopping = Task.CompletedTask;

    internal WarmPool(MetadataPlane plane, IStorageProvisioner provisioner, WarmPoolOptions options, SizingOptions sizing, TimeProvider time, ClusterEventLog events, ILogger logger)
    {
        options.Validate();
        var missing = options.Tiers.Where(t => !provisioner.Tiers.Contains(t)).ToList();
        if (missing.Count > 0)
        {
            throw new ArgumentException($"the provisioner cannot start {string.Join(", ", missing.Select(NodeTierNames.Name))} nodes for the warm pool");
        }

        _plane = plane;
        _provisioner = provisioner;
        _options = options;
        _sizing = sizing;
        _time = time;
        _events = events;
        _logger = logger;
        foreach (var tier in options.Tiers)
        {
            _ready[tier] = [];
        }
    }

    /// <summary>The settings in use.</summary>
    public WarmPoolOptions Options => _options;

    /// <summary>Idle nodes ready to be claimed, per tier.</summary>
    public IReadOnlyList<ProvisionedNode> Ready(NodeTier tier)
    {
        lock (_lock)
        {
            return _ready.TryGetValue(tier, out var nodes) ? [.. nodes] : [];
        }
    }

    /// <summary>Starts filling every tier's pool in the background.</summary>
    internal void Start()
    {
        foreach (var tier in _options.Tiers)
        {
            Refill(tier);
        }
    }

    /// <summary>
    /// Takes an idle node of <paramref name="tier"/> and activates it: from then on placement may choose it. Null when
    /// the pool of the tier is empty (still filling, or no pool for it). A replacement starts in the background.
    /// </summary>
    public async Task<ProvisionedNode?> TryClaimAsync(NodeTier tier, CancellationToken cancellationToken)
    {
        while (true)
        {
            ProvisionedNode node;
            lock (_lock)
            {
                if (!_ready.TryGetValue(tier, out var nodes) || nodes.Count == 0)
                {
                    return null;
                }

                node = nodes[0];
                nodes.RemoveAt(0);
            }

            Refill(tier);
            try
            {
                await _plane.ActivateNodeAsync(node.NodeId!.Value, cancellationToken).ConfigureAwait(false);
                Event("pool-claimed", node.NodeId, $"{NodeTierNames.Name(tier)} node {node.Handle} left the warm pool and serves");
                return node;
            }
            catch (ObjectNotFoundException ex)
            {
                // It died while idle: stop what is left of it and take the next one.
                Event("pool-failed", node.NodeId, $"warm-pool node {node.Handle} could not be activated: {ex.Message}");
                await StopQuietlyAsync(node).ConfigureAwait(false);
            }
            catch
            {
                // Cancelled or cut off mid-claim: out of the pool and claimed by nobody, so nobody else would stop it.
                await StopQuietlyAsync(node).ConfigureAwait(false);
                throw;
            }
        }
    }

    /// <summary>
    /// After a telemetry sample: idle nodes the metadata server declared dead (a starved machine can miss heartbeats
    /// for longer than the node timeout) or no longer lists leave the pool at once, are stopped, and the pool starts
    /// replacements, rather than keeping a dead node until a claim finds it.
    /// </summary>
    internal Task OnSampleAsync(IReadOnlyList<NodeSample> samples, CancellationToken cancellationToken, Func<uint, bool>? listedBefore = null)
    {
        var isGone = NodeStarts.GoneIn(samples, listedBefore);
        List<ProvisionedNode> lost = [];
        lock (_lock)
        {
            foreach (var nodes in _ready.Values)
            {
                lost.AddRange(nodes.Where(n => isGone(n.NodeId!.Value)));
                nodes.RemoveAll(lost.Contains);
            }

            if (lost.Count > 0)
            {
                // In the background: a stop may take a while (a pod's deletion), and the telemetry tick must not wait for it.
                var stopping = NodeStarts.StopQuietlyAsync(_provisioner, lost, _options.RegistrationTimeout, _time, _logger);
                _stopping = Task.WhenAll(_stopping, stopping);
            }
        }

        foreach (var node in lost)
        {
            ControllerLog.WarmPoolNodeLost(_logger, node.NodeId!.Value, node.Handle);
            Event("pool-lost", node.NodeId, $"warm-pool node {node.Handle} is gone (missed heartbeats or stopped); a replacement is starting");
        }

        foreach (var tier in lost.Select(n => n.Tier).Distinct())
        {
            Refill(tier);
        }

        return Task.CompletedTask;
    }

    private void Refill(NodeTier tier)
    {
        lock (_lock)
        {
            if (_stop.IsCancellationRequested || !_ready.ContainsKey(tier) || (_filling.TryGetValue(tier, out var running) && !running.IsCompleted))
            {
                return;
            }

            _filling[tier] = Task.Run(() => FillAsync(tier), CancellationToken.None);
        }
    }

    // One start at a time per tier, so a node the provisioner does not know the id of is the only new standby node.
    private async Task FillAsync(NodeTier tier)
    {
        var token = _stop.Token;
        try
        {
            while (!token.IsCancellationRequested)
            {
                lock (_lock)
                {
                    if (_ready[tier].Count >= _options.NodesPerTier)
                    {
                        break;
                    }
                }

                try
                {
                    var node = await StartOneAsync(tier, token).ConfigureAwait(false);
                    bool keep;
                    lock (_lock)
                    {
                        keep = !_stop.IsCancellationRequested;
                        if (keep)
                        {
                            _ready[tier].Add(node);
                        }
                    }

                    if (!keep)
                    {
                        await StopQuietlyAsync(node).ConfigureAwait(false);
                        return;
                    }

                    Event("pool-added", node.NodeId, string.Create(CultureInfo.InvariantCulture, $"{NodeTierNames.Name(tier)} node {node.Handle} is standing by ({Ready(tier).Count} of {_options.NodesPerTier} ready)"));
                }
                catch (Exception ex) when (ex is not OperationCanceledException || !token.IsCancellationRequested)
                {
                    Event("pool-failed", null, $"starting a {NodeTierNames.Name(tier)} warm-pool node failed: {ex.Message}");
                    ControllerLog.WarmPoolFailed(_logger, ex.Message);
                    await Task.Delay(_options.RetryDelay, _time, token).ConfigureAwait(false);
                }
            }
        }
        catch (OperationCanceledException) when (token.IsCancellationRequested)
        {
        }
    }

    private async Task<ProvisionedNode> StartOneAsync(NodeTier tier, CancellationToken cancellationToken)
    {
        var capacity = _options.NodeCapacityBytes ?? _sizing.ClassOf(tier)?.CapacityBytes
            ?? throw new ProvisioningException($"no node class for tier {NodeTierNames.Name(tier)}");
        var before = (await _plane.GetNodesAsync(cancellationToken).ConfigureAwait(false)).Select(n => n.Id).ToHashSet();
        var node = await _provisioner.StartNodeAsync(new NodeRequest(tier, capacity, Standby: true), cancellationToken).ConfigureAwait(false);
        if (node.NodeId is not null)
        {
            return node;
        }

        // A provisioner that only creates the node (a pod): the pool's node is the new standby node of the tier.
        try
        {
            using var deadline = new CancellationTokenSource(_options.RegistrationTimeout, _time);
            using var linked = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken, deadline.Token);
            var fresh = await NodeStarts.WaitForNodesAsync(
                _plane.GetNodesAsync,
                nodes => nodes.FirstOrDefault(n => n.State == NodeState.Standby && n.Tier == tier && !before.Contains(n.Id) && !IsPooled(n.Id)),
                PollInterval,
                _time,
                linked.Token).ConfigureAwait(false);
            return node with { NodeId = fresh.Id, Address = fresh.Address };
        }
        catch (OperationCanceledException) when (!cancellationToken.IsCancellationRequested)
        {
            await StopQuietlyAsync(node).ConfigureAwait(false);
            throw new ProvisioningException($"warm-pool node {node.Handle} did not register within {_options.RegistrationTimeout.TotalSeconds:0.#} s");
        }
    }

    private bool IsPooled(uint id)
    {
        lock (_lock)
        {
            return _ready.Values.Any(nodes => nodes.Any(n => n.NodeId == id));
        }
    }

    private Task StopQuietlyAsync(ProvisionedNode node) => NodeStarts.StopQuietlyAsync(_provisioner, [node], _options.RegistrationTimeout, _time, _logger);

    private void Event(string kind, uint? node, string reason) => _events.Add(new ClusterEvent(_time.GetUtcNow(), kind, node, reason));

    /// <summary>Stops filling and stops every unclaimed node.</summary>
    public async ValueTask DisposeAsync()
    {
        Task[] filling;
        lock (_lock)
        {
            _stop.Cancel();
            filling = [.. _filling.Values];
        }

        await Task.WhenAll(filling).ConfigureAwait(ConfigureAwaitOptions.SuppressThrowing);
        Task stopping;
        lock (_lock)
        {
            stopping = _stopping;
        }

        await stopping.ConfigureAwait(ConfigureAwaitOptions.SuppressThrowing);
        List<ProvisionedNode> idle;
        lock (_lock)
        {
            idle = [.. _ready.Values.SelectMany(n => n)];
            foreach (var nodes in _ready.Values)
            {
                nodes.Clear();
            }
        }

        await NodeStarts.StopQuietlyAsync(_provisioner, idle, _options.RegistrationTimeout, _time, _logger).ConfigureAwait(false);

        _stop.Dispose();
    }
}
