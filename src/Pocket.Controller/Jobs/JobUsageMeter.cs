using Microsoft.Extensions.Logging;
using Pocket.Admin;
using Pocket.Client;
using Pocket.Protocol;

namespace Pocket.Controller.Jobs;

/// <summary>What a job has used so far: requests and stored bytes integrated over time (GB-seconds, 1 GB = 10^9 bytes).</summary>
/// <param name="Requests">Requests the metadata server counted for the job.</param>
/// <param name="GbSeconds">Bytes stored (blocks and inline) times seconds held, in GB-seconds.</param>
/// <param name="GbSecondsByTier">The blocks' share of that per tier.</param>
/// <param name="Since">When metering of the job began.</param>
public sealed record JobMeterReading(long Requests, double GbSeconds, IReadOnlyDictionary<NodeTier, double> GbSecondsByTier, DateTimeOffset Since)
{
    /// <summary>Bytes the job stored (blocks and inline) at the last tick.</summary>
    public long StoredBytes { get; init; }

    /// <summary>The job's usage as the metadata server reported it at the last tick.</summary>
    public JobUsage? Usage { get; init; }
}

/// <summary>One metadata server's share of the controller's jobs, as of the last meter tick.</summary>
/// <param name="Address">The server, host:port.</param>
/// <param name="Jobs">The controller's jobs on it.</param>
/// <param name="RequestsPerSecond">Requests its jobs made per second between the last two ticks (jobs read at both).</param>
public sealed record MetadataServerLoad(string Address, int Jobs, double RequestsPerSecond);

/// <summary>
/// Meters every job on the telemetry tick: reads its usage from the metadata server and adds the bytes it held since
/// the previous tick times the time between them (on the controller's clock), so the GB-seconds are what it held,
/// not what it holds now. A job is metered from its first tick; ended jobs are forgotten.
/// </summary>
internal sealed class JobUsageMeter(JobRegistry registry, TimeProvider time, ILogger logger)
{
    private const double BytesPerGb = 1e9;

    private readonly Lock _lock = new();
    private readonly Dictionary<string, Meter> _meters = new(StringComparer.Ordinal);
    private IReadOnlyList<MetadataServerLoad> _servers = [];
    private DateTimeOffset? _lastTick;

    /// <summary>Jobs and request rate per metadata server, as of the last tick (every server of the plane, in its order).</summary>
    public IReadOnlyList<MetadataServerLoad> Servers
    {
        get
        {
            lock (_lock)
            {
                return _servers;
            }
        }
    }

    /// <summary>The job's reading, or null before its first tick.</summary>
    public JobMeterReading? Read(string jobId)
    {
        lock (_lock)
        {
            return _meters.TryGetValue(jobId, out var meter)
                ? Reading(meter)
                : null;
        }
    }

    /// <summary>Every metered job's reading.</summary>
    public IReadOnlyList<(string JobId, JobMeterReading Reading)> ReadAll()
    {
        lock (_lock)
        {
            return [.. _meters.Select(m => (m.Key, Reading(m.Value)))];
        }
    }

    private static JobMeterReading Reading(Meter meter) =>
        new(meter.Requests, meter.GbSeconds, new Dictionary<NodeTier, double>(meter.ByTier), meter.Since) { StoredBytes = meter.Bytes, Usage = meter.Usage };

    /// <summary>One tick: each job's held bytes since the last tick are added, then its current bytes remembered.</summary>
    public async Task TickAsync(CancellationToken cancellationToken)
    {
        var jobs = registry.Jobs;
        var servers = registry.Plane.Servers.Select(s => s.MetadataAddress).ToList();
        var jobsOn = new int[servers.Count];
        var requestsOn = new long[servers.Count];
        foreach (var job in jobs)
        {
            JobUsage usage;
            var admin = registry.AdminOf(job);
            var server = Math.Max(0, servers.IndexOf(admin.MetadataAddress));
            jobsOn[server]++;
            try
            {
                usage = await admin.GetJobUsageAsync(job.Id, cancellationToken).ConfigureAwait(false);
            }
            catch (PocketException ex)
            {
                // The next tick integrates over the gap with the bytes last seen: a missed read loses no time.
                ControllerLog.UsagePollFailed(logger, job.Id, ex.Message);
                continue;
            }

            var now = time.GetUtcNow();
            lock (_lock)
            {
                if (!_meters.TryGetValue(job.Id, out var meter))
                {
                    _meters[job.Id] = meter = new Meter { Since = now, Last = now, Requests = usage.Requests };
                }

                // Counted only for a job read at the last tick too, so a new job's past requests are not this second's.
                requestsOn[server] += Math.Max(0, usage.Requests - meter.Requests);

                var seconds = Math.Max(0, (now - meter.Last).TotalSeconds);
                meter.GbSeconds += (meter.Bytes / BytesPerGb) * seconds;
                foreach (var (tier, bytes) in meter.BytesByTier)
                {
                    meter.ByTier[tier] = meter.ByTier.GetValueOrDefault(tier) + ((bytes / BytesPerGb) * seconds);
                }

                meter.Last = now;
                meter.Bytes = usage.BlockBytes + usage.InlineBytes;
                meter.BytesByTier = usage.BytesByTier.Where(t => t.Value > 0).ToDictionary(t => t.Key, t => t.Value);
                meter.Requests = usage.Requests;
                meter.Usage = usage;
            }
        }

        var registered = jobs.Select(j => j.Id).ToHashSet(StringComparer.Ordinal);
        var tick = time.GetUtcNow();
        lock (_lock)
        {
            var seconds = _lastTick is { } last ? (tick - last).TotalSeconds : 0;
            _servers = [.. servers.Select((address, i) => new MetadataServerLoad(address, jobsOn[i], seconds > 0 ? requestsOn[i] / seconds : 0))];
            _lastTick = tick;
            foreach (var gone in _meters.Keys.Where(id => !registered.Contains(id)).ToList())
            {
                _meters.Remove(gone);
            }
        }
    }

    private sealed class Meter
    {
        public DateTimeOffset Since { get; init; }

        public DateTimeOffset Last { get; set; }

        public long Bytes { get; set; }

        public IReadOnlyDictionary<NodeTier, long> BytesByTier { get; set; } = new Dictionary<NodeTier, long>();

        public Dictionary<NodeTier, double> ByTier { get; } = [];

        public long Requests { get; set; }

        public double GbSeconds { get; set; }

        public JobUsage? Usage { get; set; }
    }
}
