using Microsoft.Extensions.Logging;
using Pocket.Client;
using Pocket.Controller.Jobs;
using Pocket.Protocol;

namespace Pocket.Controller.Scaling;

/// <summary>One node as seen at one poll of the metadata server.</summary>
public sealed record NodeSample(
    DateTimeOffset Time,
    uint NodeId,
    NodeTier Tier,
    NodeState State,
    long Capacity,
    long Used,
    double Cpu,
    double NetRxBytesPerSecond,
    double NetTxBytesPerSecond,
    long MovedBytes);

/// <summary>Something the controller decided or noticed: scaling decisions with their reasons, node deaths.</summary>
/// <param name="Time">When.</param>
/// <param name="Kind">scale-up, node-started, scale-down, node-drained, node-stopped, scale-failed, node-dead, node-removed.</param>
/// <param name="NodeId">The node concerned, when there is one.</param>
/// <param name="Reason">Why, in words.</param>
public sealed record ClusterEvent(DateTimeOffset Time, string Kind, uint? NodeId, string Reason)
{
    /// <summary>Of a <c>node-drained</c> event: the bytes the drain moved off the node in all (the metrics count them exactly).</summary>
    public long? MovedBytes { get; init; }
}

/// <summary>A bounded log of <see cref="ClusterEvent"/>s, newest last.</summary>
public sealed class ClusterEventLog(int capacity)
{
    private readonly Lock _lock = new();
    private readonly Queue<ClusterEvent> _events = new();

    /// <summary>Raised after an event is added (outside the lock).</summary>
    public event Action<ClusterEvent>? Added;

    /// <summary>Adds an event, dropping the oldest when full.</summary>
    public void Add(ClusterEvent clusterEvent)
    {
        lock (_lock)
        {
            _events.Enqueue(clusterEvent);
            while (_events.Count > capacity)
            {
                _events.Dequeue();
            }
        }

        Added?.Invoke(clusterEvent);
    }

    /// <summary>The last <paramref name="limit"/> events, oldest first.</summary>
    public IReadOnlyList<ClusterEvent> Last(int limit)
    {
        lock (_lock)
        {
            return [.. _events.Skip(Math.Max(0, _events.Count - limit))];
        }
    }
}

/// <summary>
/// Polls the metadata servers' node lists every second on the controller's clock, merged into one sample per node
/// (with several servers each lists its share of a node: <see cref="MetadataPlane.Merge"/>), and keeps a bounded
/// per-node history; notices node deaths and removals. The autoscaler evaluates after each poll, so it always sees
/// a fresh sample.
/// </summary>
public sealed class ClusterTelemetry : IAsyncDisposable
{
    private readonly MetadataPlane _plane;
    private readonly TimeProvider _time;
    private readonly int _historyLength;
    private readonly ILogger _logger;
    private readonly Lock _lock = new();
    private readonly Dictionary<uint, Queue<NodeSample>> _history = [];
    private readonly Dictionary<uint, NodeState> _lastState = [];
    private readonly CancellationTokenSource _stop = new();
    private readonly Func<IReadOnlyList<NodeSample>, Func<uint, bool>, CancellationToken, Task> _sampled;
    private IReadOnlyList<(string Address, string Error)> _failures = [];
    private Task? _loop;

    internal ClusterTelemetry(MetadataPlane plane, TimeProvider time, TimeSpan interval, int historyLength, ClusterEventLog events, ILogger logger, Func<IReadOnlyList<NodeSample>, Func<uint, bool>, CancellationToken, Task> sampled)
    {
        _sampled = sampled;
        _plane = plane;
        _time = time;
        Interval = interval;
        _historyLength = historyLength;
        Events = events;
        _logger = logger;
    }

    /// <summary>Time between polls.</summary>
    public TimeSpan Interval { get; }

    /// <summary>Where node deaths (and scaling decisions) are recorded.</summary>
    public ClusterEventLog Events { get; }

    internal void Start() => _loop ??= Task.Run(LoopAsync);

    /// <summary>The metadata servers that did not answer the last poll, with why (empty when all did).</summary>
    internal IReadOnlyList<(string Address, string Error)> Unreachable
    {
        get
        {
            lock (_lock)
            {
                return _failures;
            }
        }
    }

    /// <summary>Whether a poll so far listed <paramref name="nodeId"/>.</summary>
    internal bool HasListed(uint nodeId)
    {
        lock (_lock)
        {
            return _history.ContainsKey(nodeId);
        }
    }

    /// <summary>The last <paramref name="limit"/> samples of every node, oldest first.</summary>
    public IReadOnlyDictionary<uint, IReadOnlyList<NodeSample>> History(int limit)
    {
        lock (_lock)
        {
            return _history.ToDictionary(h => h.Key, h => (IReadOnlyList<NodeSample>)[.. h.Value.Skip(Math.Max(0, h.Value.Count - limit))]);
        }
    }

    private async Task LoopAsync()
    {
        using var ticker = new PeriodicTimer(Interval, _time);
        try
        {
            do
            {
                await PollAsync(_stop.Token).ConfigureAwait(false);
            }
            while (await ticker.WaitForNextTickAsync(_stop.Token).ConfigureAwait(false));
        }
        catch (OperationCanceledException) when (_stop.IsCancellationRequested)
        {
        }
    }

    internal async Task PollAsync(CancellationToken cancellationToken)
    {
        IReadOnlyList<NodeInfo> nodes;
        try
        {
            var read = await _plane.ReadNodesAsync(cancellationToken).ConfigureAwait(false);
            nodes = read.Nodes;
            foreach (var (address, error) in read.Failures)
            {
                ControllerLog.TelemetryFailed(_logger, $"metadata server {address}: {error}");
            }

            lock (_lock)
            {
                _failures = read.Failures;
            }
        }
        catch (Exception ex) when (ex is PocketException or IOException)
        {
            ControllerLog.TelemetryFailed(_logger, ex.Message);
            lock (_lock)
            {
                _failures = [.. _plane.Servers.Select(s => (s.MetadataAddress, ex.Message))];
            }

            return;
        }

        var now = _time.GetUtcNow();
        var samples = nodes.Select(n => new NodeSample(now, n.Id, n.Tier, n.State, n.Capacity, n.Used, n.Cpu, n.NetRxBytesPerSecond, n.NetTxBytesPerSecond, n.MovedBytes)).ToList();
        var noticed = new List<ClusterEvent>();
        lock (_lock)
        {
            foreach (var sample in samples)
            {
                if (!_history.TryGetValue(sample.NodeId, out var queue))
                {
                    _history[sample.NodeId] = queue = new Queue<NodeSample>();
                }

                queue.Enqueue(sample);
                while (queue.Count > _historyLength)
                {
                    queue.Dequeue();
                }

                if (sample.State == NodeState.Dead && _lastState.TryGetValue(sample.NodeId, out var was) && was != NodeState.Dead)
                {
                    noticed.Add(new ClusterEvent(now, "node-dead", sample.NodeId, $"the metadata server declared node {sample.NodeId} dead (it was {was.ToString().ToLowerInvariant()})"));
                }

                _lastState[sample.NodeId] = sample.State;
            }

            var listed = samples.Select(s => s.NodeId).ToHashSet();
            foreach (var gone in _lastState.Keys.Where(id => !listed.Contains(id)).ToList())
            {
                noticed.Add(new ClusterEvent(now, "node-removed", gone, $"node {gone} left the metadata server's node list"));
                _lastState.Remove(gone);
            }
        }

        foreach (var clusterEvent in noticed)
        {
            Events.Add(clusterEvent);
        }

        // The controller's tick (ControlLoop) runs its steps in order and logs a step's failure itself.
        await _sampled(samples, HasListed, cancellationToken).ConfigureAwait(false);
    }

    /// <summary>Stops polling.</summary>
    public async ValueTask DisposeAsync()
    {
        await _stop.CancelAsync().ConfigureAwait(false);
        if (_loop is not null)
        {
            await _loop.ConfigureAwait(false);
        }

        _stop.Dispose();
    }
}
