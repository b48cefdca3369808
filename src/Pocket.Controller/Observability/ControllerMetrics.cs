using Pocket.Client;
using Pocket.Controller.Jobs;
using Pocket.Controller.Scaling;
using Pocket.Protocol;
using Prometheus;

namespace Pocket.Controller.Observability;

/// <summary>
/// The controller's Prometheus metrics (<c>GET /metrics</c>, behind the cluster token like the rest of the API; names in
/// docs/metrics.md). Cluster state is read from the last telemetry sample when scraped; scaling events and bytes moved
/// by drains are counted as they happen, so they survive the bounded event log.
/// </summary>
internal sealed class ControllerMetrics
{
    private static readonly NodeState[] States = [NodeState.Live, NodeState.Draining, NodeState.Dead, NodeState.Drained, NodeState.Standby, NodeState.Suspect];

    private readonly Lock _lock = new();
    private readonly Counter _events;
    private readonly Counter _movedBytes;
    private readonly Dictionary<uint, long> _moved = [];
    private readonly HashSet<string> _jobSeries = new(StringComparer.Ordinal);
    private readonly HashSet<string> _serverSeries = new(StringComparer.Ordinal);
    private IReadOnlyList<NodeSample> _last = [];

    public ControllerMetrics(ControllerOptions options, JobRegistry registry, JobUsageMeter meter, WarmPool? warmPool, ClusterEventLog events)
    {
        var factory = Prometheus.Metrics.WithCustomRegistry(Registry);
        _events = factory.CreateCounter(
            "pocket_controller_events_total",
            "Scaling decisions and node events by kind (scale-up, scale-down, node-started, node-drained, node-dead, pool-added, ...) and reason (cpu, network, capacity, below_bounds, ...).",
            new CounterConfiguration { LabelNames = ["kind", "reason"] });
        _movedBytes = factory.CreateCounter("pocket_controller_drain_moved_bytes_total", "Bytes drains copied off nodes being removed.");
        var nodes = factory.CreateGauge("pocket_controller_nodes", "Storage nodes by tier and state (last telemetry sample).", new GaugeConfiguration { LabelNames = ["tier", "state"] });
        var capacity = factory.CreateGauge("pocket_controller_capacity_bytes", "Capacity of live and draining nodes, by tier.", new GaugeConfiguration { LabelNames = ["tier"] });
        var used = factory.CreateGauge("pocket_controller_used_bytes", "Allocated bytes on live and draining nodes, by tier.", new GaugeConfiguration { LabelNames = ["tier"] });
        var cpu = factory.CreateGauge("pocket_controller_cpu_ratio", "Mean CPU share of live nodes, by tier (0..1).", new GaugeConfiguration { LabelNames = ["tier"] });
        var rx = factory.CreateGauge("pocket_controller_network_receive_bytes_per_second", "Bytes per second live nodes received, summed by tier.", new GaugeConfiguration { LabelNames = ["tier"] });
        var tx = factory.CreateGauge("pocket_controller_network_transmit_bytes_per_second", "Bytes per second live nodes sent, summed by tier.", new GaugeConfiguration { LabelNames = ["tier"] });
        var pool = factory.CreateGauge("pocket_controller_warm_pool_nodes", "Warm-pool nodes standing by, by tier.", new GaugeConfiguration { LabelNames = ["tier"] });
        var poolTarget = factory.CreateGauge("pocket_controller_warm_pool_target_nodes", "Warm-pool nodes the controller keeps per tier (0 without a pool).", new GaugeConfiguration { LabelNames = ["tier"] });
        var jobs = factory.CreateGauge("pocket_controller_jobs", "Jobs registered with the controller.");
        var jobBytes = factory.CreateGauge("pocket_controller_job_stored_bytes", "Bytes a job stores (blocks and inline), for the top jobs by GB-seconds; the rest summed as job=\"_other\".", new GaugeConfiguration { LabelNames = ["job"] });
        var jobGbSeconds = factory.CreateGauge("pocket_controller_job_stored_byte_seconds", "Bytes a job stored integrated over time so far (GB-seconds x 10^9), top jobs; the rest summed as job=\"_other\".", new GaugeConfiguration { LabelNames = ["job"] });
        var jobRequests = factory.CreateGauge("pocket_controller_job_requests", "Requests the metadata server counted for a job, top jobs; the rest summed as job=\"_other\".", new GaugeConfiguration { LabelNames = ["job"] });
        var gbSeconds = factory.CreateGauge("pocket_controller_stored_byte_seconds", "Byte-seconds (GB-seconds x 10^9) of every job registered now, summed.");
        var metadataServers = factory.CreateGauge("pocket_controller_metadata_servers", "Metadata servers in the plane, by state (serving, joining, draining, lost).", new GaugeConfiguration { LabelNames = ["state"] });
        var metadataCpu = factory.CreateGauge("pocket_controller_metadata_cpu_cores", "CPU each metadata server's process used per second over the last telemetry interval, in cores (0.5: half a core).", new GaugeConfiguration { LabelNames = ["server"] });
        var metadataRequests = factory.CreateGauge("pocket_controller_metadata_requests_per_second", "Job requests each metadata server handled per second over the last telemetry interval.", new GaugeConfiguration { LabelNames = ["server"] });
        var plane = registry.Plane;
        events.Added += OnEvent;
        Registry.AddBeforeCollectCallback(() =>
        {
            IReadOnlyList<NodeSample> samples;
            lock (_lock)
            {
                samples = _last;
            }

            foreach (var tier in NodeTierNames.All)
            {
                var name = NodeTierNames.Name(tier);
                foreach (var state in States)
                {
                    nodes.WithLabels(name, state.ToString().ToLowerInvariant()).Set(samples.Count(s => s.Tier == tier && s.State == state));
                }

                var serving = samples.Where(s => s.Tier == tier && s.State is NodeState.Live or NodeState.Draining).ToList();
                capacity.WithLabels(name).Set(serving.Sum(s => s.Capacity));
                used.WithLabels(name).Set(serving.Sum(s => s.Used));
                var live = samples.Where(s => s.Tier == tier && s.State == NodeState.Live).ToList();
                cpu.WithLabels(name).Set(live.Count == 0 ? 0 : live.Average(s => s.Cpu));
                rx.WithLabels(name).Set(live.Sum(s => s.NetRxBytesPerSecond));
                tx.WithLabels(name).Set(live.Sum(s => s.NetTxBytesPerSecond));
                pool.WithLabels(name).Set(warmPool?.Ready(tier).Count ?? 0);
                poolTarget.WithLabels(name).Set(warmPool is not null && warmPool.Options.Tiers.Contains(tier) ? warmPool.Options.NodesPerTier : 0);
            }

            var servers = plane.Servers.Select(s => s.MetadataAddress).ToList();
            foreach (var state in (string[])["serving", "joining", "draining", "lost"])
            {
                metadataServers.WithLabels(state).Set(servers.Count(a => (plane.IsUp(plane.For(a)) ? plane.StateOf(a).ToString().ToLowerInvariant() : "lost") == state));
            }

            foreach (var gone in _serverSeries.Where(a => !servers.Contains(a)).ToList())
            {
                // A server the metadata-plane scaler stopped leaves the exposition.
                metadataCpu.RemoveLabelled(gone);
                metadataRequests.RemoveLabelled(gone);
                _serverSeries.Remove(gone);
            }

            foreach (var address in servers)
            {
                if (plane.UsageOf(address) is { } usage)
                {
                    metadataCpu.WithLabels(address).Set(usage.Cpu);
                    metadataRequests.WithLabels(address).Set(usage.RequestsPerSecond);
                    _serverSeries.Add(address);
                }
            }

            jobs.Set(registry.Jobs.Count);
            var readings = meter.ReadAll();
            gbSeconds.Set(readings.Sum(r => r.Reading.GbSeconds) * BytesPerGb);
            var top = readings.OrderByDescending(r => r.Reading.GbSeconds).ThenBy(r => r.JobId, StringComparer.Ordinal).Take(options.MetricsTopJobs).ToList();
            var rest = readings.Except(top).ToList();
            var shown = top.Select(t => t.JobId).Append(OtherJobs).ToHashSet(StringComparer.Ordinal);
            foreach (var gone in _jobSeries.Where(j => !shown.Contains(j)).ToList())
            {
                // A job that ended or fell out of the top goes from the exposition (it is part of _other meanwhile).
                jobBytes.RemoveLabelled(gone);
                jobGbSeconds.RemoveLabelled(gone);
                jobRequests.RemoveLabelled(gone);
                _jobSeries.Remove(gone);
            }

            foreach (var (id, reading) in top)
            {
                jobBytes.WithLabels(id).Set(reading.StoredBytes);
                jobGbSeconds.WithLabels(id).Set(reading.GbSeconds * BytesPerGb);
                jobRequests.WithLabels(id).Set(reading.Requests);
                _jobSeries.Add(id);
            }

            jobBytes.WithLabels(OtherJobs).Set(rest.Sum(r => r.Reading.StoredBytes));
            jobGbSeconds.WithLabels(OtherJobs).Set(rest.Sum(r => r.Reading.GbSeconds) * BytesPerGb);
            jobRequests.WithLabels(OtherJobs).Set(rest.Sum(r => r.Reading.Requests));
            _jobSeries.Add(OtherJobs);
        });
    }

    private const double BytesPerGb = 1e9;

    /// <summary>The label value the jobs outside the top share.</summary>
    public const string OtherJobs = "_other";

    public CollectorRegistry Registry { get; } = Prometheus.Metrics.NewCustomRegistry();

    /// <summary>Takes each telemetry sample: the node gauges read the latest, and drains' moved bytes are added up.</summary>
    public Task OnSampleAsync(IReadOnlyList<NodeSample> samples, CancellationToken cancellationToken)
    {
        lock (_lock)
        {
            _last = samples;
            foreach (var sample in samples)
            {
                AddMoved(sample.NodeId, sample.MovedBytes);
            }

            var listed = samples.Select(s => s.NodeId).ToHashSet();
            foreach (var gone in _moved.Keys.Where(id => !listed.Contains(id)).ToList())
            {
                _moved.Remove(gone);
            }
        }

        return Task.CompletedTask;
    }

    private void OnEvent(ClusterEvent clusterEvent)
    {
        _events.WithLabels(clusterEvent.Kind, ReasonLabel(clusterEvent)).Inc();

        // A drain that ends between two telemetry samples (and a node stopped right after) would otherwise leave its
        // last bytes uncounted: the drain's own total settles the node's count.
        if (clusterEvent is { MovedBytes: { } moved, NodeId: { } node })
        {
            lock (_lock)
            {
                AddMoved(node, moved);
            }
        }
    }

    // Moved bytes are cumulative per node: only the growth since the node's last reading is added.
    private void AddMoved(uint node, long moved)
    {
        var before = _moved.GetValueOrDefault(node);
        if (moved > before)
        {
            _movedBytes.Inc(moved - before);
        }

        _moved[node] = Math.Max(before, moved);
    }

    /// <summary>
    /// A bounded label for an event's free-text reason: the resources named in a scale-up ("cpu", "network",
    /// "capacity", joined by "+"), "below_bounds" for a scale-down, "registration" for nodes a job's registration
    /// started, otherwise "none".
    /// </summary>
    internal static string ReasonLabel(ClusterEvent clusterEvent)
    {
        var reason = clusterEvent.Reason;
        if (clusterEvent.Kind is "scale-down")
        {
            return reason.Contains("below", StringComparison.Ordinal) ? "below_bounds" : "requested";
        }

        if (clusterEvent.Kind is "scale-up" or "scale-failed")
        {
            var named = new[] { "cpu", "network", "capacity" }.Where(r => reason.Contains(r + " ", StringComparison.Ordinal)).ToList();
            if (named.Count > 0 && reason.Contains("above", StringComparison.Ordinal))
            {
                return string.Join('+', named);
            }

            return reason.Contains("regist", StringComparison.OrdinalIgnoreCase) ? "registration" : "requested";
        }

        return "none";
    }
}
