using System.Globalization;
using Microsoft.Extensions.Logging;
using Pocket.Controller.Provisioning;
using Pocket.Protocol;

namespace Pocket.Controller.Scaling;

/// <summary>
/// Keeps each tier at its minimum (<see cref="ControllerOptions.MinimumNodes"/>) when nodes die, whether or not the
/// autoscaler runs: after each telemetry sample, a tier with a node that died and fewer live (or starting) nodes than
/// its minimum gets replacements from the provisioner. The dead node's own process or pod, when the
/// <see cref="NodeInventory"/> records it, is stopped (a frozen process must not come back half-alive beside its
/// replacement); replacements are recorded there too. Every step is an event: node-replacing, node-replaced,
/// replace-failed.
/// </summary>
internal sealed class NodeReplacer : IAsyncDisposable
{
    private readonly IStorageProvisioner _provisioner;
    private readonly NodeInventory _inventory;
    private readonly IReadOnlyDictionary<NodeTier, int> _minimum;
    private readonly IReadOnlyDictionary<NodeTier, long> _capacity;
    private readonly TimeSpan _startTimeout;
    private readonly TimeProvider _time;
    private readonly ClusterEventLog _events;
    private readonly ILogger _logger;
    private readonly Lock _lock = new();
    private readonly HashSet<uint> _replaced = [];
    private readonly Dictionary<NodeTier, int> _starting = [];
    private readonly Dictionary<NodeTier, DateTimeOffset> _retryAfter = [];
    private readonly CancellationTokenSource _stop = new();
    private Task _work = Task.CompletedTask;

    /// <summary>How long after a failed start the tier's dead nodes are looked at again.</summary>
    public static readonly TimeSpan RetryPause = TimeSpan.FromSeconds(10);

    public NodeReplacer(IStorageProvisioner provisioner, NodeInventory inventory, IReadOnlyDictionary<NodeTier, int> minimum, IReadOnlyDictionary<NodeTier, long> capacity, TimeSpan startTimeout, TimeProvider time, ClusterEventLog events, ILogger logger)
    {
        _provisioner = provisioner;
        _inventory = inventory;
        _minimum = minimum;
        _capacity = capacity;
        _startTimeout = startTimeout;
        _time = time;
        _events = events;
        _logger = logger;
    }

    /// <summary>Replacements and stops under way (completed when idle).</summary>
    public Task Current
    {
        get
        {
            lock (_lock)
            {
                return _work;
            }
        }
    }

    public Task OnSampleAsync(IReadOnlyList<NodeSample> samples, CancellationToken cancellationToken)
    {
        var now = _time.GetUtcNow();
        List<(NodeTier Tier, uint DeadId, int Live)> starts = [];
        List<ProvisionedNode> stops = [];
        lock (_lock)
        {
            if (_stop.IsCancellationRequested)
            {
                return Task.CompletedTask;
            }

            foreach (var dead in samples.Where(s => s.State == NodeState.Dead && !_replaced.Contains(s.NodeId)).OrderBy(s => s.NodeId))
            {
                _replaced.Add(dead.NodeId);
                if (_inventory.TryGetOwned(dead.NodeId, out var handle))
                {
                    _inventory.Release(dead.NodeId);
                    stops.Add(handle);
                }

                if (!_minimum.TryGetValue(dead.Tier, out var minimum))
                {
                    continue;
                }

                if (_retryAfter.TryGetValue(dead.Tier, out var retry) && now < retry)
                {
                    // A start of this tier just failed: the node is looked at again after the pause.
                    _replaced.Remove(dead.NodeId);
                    continue;
                }

                var live = samples.Count(s => s.Tier == dead.Tier && s.State == NodeState.Live);
                var starting = _starting.GetValueOrDefault(dead.Tier);
                if (live + starting < minimum)
                {
                    _starting[dead.Tier] = starting + 1;
                    starts.Add((dead.Tier, dead.NodeId, live));
                }
            }

            if (starts.Count == 0 && stops.Count == 0)
            {
                return Task.CompletedTask;
            }

            // In the background: a start takes seconds, and the telemetry tick must not wait for it.
            var work = Task.WhenAll(starts.Select(s => ReplaceAsync(s.Tier, s.DeadId, _stop.Token)).Append(StopAsync(stops)));
            _work = Task.WhenAll(_work, work);
        }

        foreach (var (tier, deadId, live) in starts)
        {
            var reason = string.Create(CultureInfo.InvariantCulture, $"node {deadId} ({NodeTierNames.Name(tier)}) is dead; {NodeTierNames.Name(tier)} has {live} live node(s), its minimum is {_minimum[tier]}: starting a replacement");
            _events.Add(new ClusterEvent(now, "node-replacing", deadId, reason));
            ControllerLog.NodeReplacing(_logger, deadId, reason);
        }

        return Task.CompletedTask;
    }

    private async Task ReplaceAsync(NodeTier tier, uint deadId, CancellationToken cancellationToken)
    {
        await Task.Yield();
        try
        {
            using var deadline = new CancellationTokenSource(_startTimeout, _time);
            using var linked = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken, deadline.Token);
            var node = await _provisioner.StartNodeAsync(new NodeRequest(tier, _capacity[tier]), linked.Token).ConfigureAwait(false);
            _inventory.Own(node);
            _events.Add(new ClusterEvent(_time.GetUtcNow(), "node-replaced", node.NodeId, $"node {node.NodeId?.ToString(CultureInfo.InvariantCulture) ?? node.Handle} ({NodeTierNames.Name(tier)}, {node.Handle}) replaces dead node {deadId}"));
        }
        catch (Exception ex) when (ex is not OutOfMemoryException)
        {
            if (!cancellationToken.IsCancellationRequested)
            {
                _events.Add(new ClusterEvent(_time.GetUtcNow(), "replace-failed", deadId, string.Create(CultureInfo.InvariantCulture, $"no replacement for dead node {deadId} ({NodeTierNames.Name(tier)}): {ex.Message}; trying again in {RetryPause.TotalSeconds:0} s")));
                ControllerLog.NodeReplaceFailed(_logger, deadId, ex.Message);
                lock (_lock)
                {
                    // Tried again after a pause, not on every sample: a provisioner that fails now likely fails at once again.
                    _replaced.Remove(deadId);
                    _retryAfter[tier] = _time.GetUtcNow() + RetryPause;
                }
            }
        }
        finally
        {
            lock (_lock)
            {
                _starting[tier]--;
            }
        }
    }

    private async Task StopAsync(List<ProvisionedNode> nodes)
    {
        if (nodes.Count > 0)
        {
            await Task.Yield();
            await NodeStarts.StopQuietlyAsync(_provisioner, nodes, _startTimeout, _time, _logger).ConfigureAwait(false);
        }
    }

    public async ValueTask DisposeAsync()
    {
        Task work;
        lock (_lock)
        {
            _stop.Cancel();
            work = _work;
        }

        await work.ConfigureAwait(ConfigureAwaitOptions.SuppressThrowing);
        _stop.Dispose();
    }
}
