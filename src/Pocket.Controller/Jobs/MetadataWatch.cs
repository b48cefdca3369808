using System.Globalization;
using Microsoft.Extensions.Logging;
using Pocket.Admin;
using Pocket.Client;
using Pocket.Controller.Provisioning;
using Pocket.Controller.Scaling;

namespace Pocket.Controller.Jobs;

/// <summary>How the controller watches its metadata servers (<see cref="ControllerOptions.MetadataLiveness"/>).</summary>
public sealed record MetadataLivenessOptions
{
    /// <summary>How often each metadata server is probed (one ListNodes with the cluster token), on the registry's clock.</summary>
    public TimeSpan ProbeInterval { get; init; } = TimeSpan.FromSeconds(1);

    /// <summary>How long one probe may wait for its answer before it counts as failed.</summary>
    public TimeSpan ProbeTimeout { get; init; } = TimeSpan.FromSeconds(2);

    /// <summary>
    /// Failed probes in a row after which a server is lost: its jobs are ended as lost and, when the provisioner can start
    /// metadata servers, a replacement is started at its address. With the defaults a killed server (its connections
    /// refused at once) is declared lost about 3 s after it died, a frozen one within about 3 x (1 + 2) s.
    /// </summary>
    public int FailedProbes { get; init; } = 3;

    /// <summary>Start a replacement for a lost server (needs an <see cref="IMetadataProvisioner"/>).</summary>
    public bool Replace { get; init; } = true;

    /// <summary>How long after a failed replacement start the next is tried.</summary>
    public TimeSpan RetryPause { get; init; } = TimeSpan.FromSeconds(10);

    /// <summary>Throws <see cref="ArgumentException"/> naming the first bad setting.</summary>
    public void Validate()
    {
        if (ProbeInterval <= TimeSpan.Zero || ProbeTimeout <= TimeSpan.Zero || RetryPause <= TimeSpan.Zero)
        {
            throw new ArgumentException("metadata probe interval, probe timeout and retry pause must be positive");
        }

        if (FailedProbes < 1)
        {
            throw new ArgumentException("a metadata server is lost after at least 1 failed probe");
        }
    }
}

/// <summary>
/// A metadata server that does not answer: since when (its first failed probe), where it stands (<see cref="NotAnswering"/>,
/// <see cref="Lost"/> or <see cref="Replacing"/>) and the last failure.
/// </summary>
internal sealed record MetadataOutage(string Address, DateTimeOffset Since, string State, string? Error)
{
    /// <summary>Probes fail, fewer in a row than make it lost: its jobs still stand.</summary>
    public const string NotAnswering = "not answering";

    /// <summary>Declared lost (its jobs ended as lost); no replacement is starting (none possible, or the last failed).</summary>
    public const string Lost = "lost";

    /// <summary>Declared lost, and a replacement is starting at its address.</summary>
    public const string Replacing = "replacing";
}

/// <summary>
/// Notices a dead metadata server and replaces it (docs/architecture.md, "A metadata server dies"). Every
/// <see cref="MetadataLivenessOptions.ProbeInterval"/> each server is probed; after
/// <see cref="MetadataLivenessOptions.FailedProbes"/> failures in a row it is lost: no job is placed on it, its jobs
/// are ended as <see cref="JobEndReason.Lost"/> (their node shares freed), and a replacement is started at its address
/// with those jobs' tokens, which it answers <c>JobLost</c>. Storage nodes give the lost server's segments to the
/// others by themselves and join the replacement when it appears. Events: metadata-lost, metadata-replacing,
/// metadata-replaced, metadata-replace-failed.
/// </summary>
internal sealed class MetadataWatch : IAsyncDisposable
{
    private readonly MetadataPlane _plane;
    private readonly JobRegistry _registry;
    private readonly IMetadataProvisioner? _provisioner;
    private readonly MetadataLivenessOptions _options;
    private readonly TimeProvider _time;
    private readonly ClusterEventLog _events;
    private readonly ILogger _logger;
    private readonly Dictionary<string, ServerState> _servers = new(StringComparer.OrdinalIgnoreCase);
    private readonly CancellationTokenSource _stop = new();
    private Task _loop = Task.CompletedTask;
    private Task _work = Task.CompletedTask;

    private sealed class ServerState
    {
        // Replaced whole (never mutated) so /healthz reads it from another thread without the probe loop's lock.
        public volatile MetadataOutage? Down;
        public int Failures;
        public bool Lost;
        public bool Replacing;
        public DateTimeOffset LostAt;
        public DateTimeOffset RetryAfter;
        public List<LostJobLine> LostJobs = [];
    }

    public MetadataWatch(MetadataPlane plane, JobRegistry registry, IMetadataProvisioner? provisioner, MetadataLivenessOptions options, TimeProvider time, ClusterEventLog events, ILogger logger)
    {
        _plane = plane;
        _registry = registry;
        _provisioner = options.Replace ? provisioner : null;
        _options = options;
        _time = time;
        _events = events;
        _logger = logger;
        foreach (var server in plane.Servers)
        {
            _servers[server.MetadataAddress] = new ServerState();
        }
    }

    public void Start() => _loop = RunAsync(_stop.Token);

    /// <summary>One round of probes (the loop's step; tests on a fake clock call it through the loop).</summary>
    internal async Task ProbeAllAsync(CancellationToken cancellationToken)
    {
        await Task.WhenAll(_plane.Servers.Select(server => ProbeAsync(server, cancellationToken))).ConfigureAwait(false);
    }

    private async Task RunAsync(CancellationToken cancellationToken)
    {
        using var timer = new PeriodicTimer(_options.ProbeInterval, _time);
        try
        {
            while (await timer.WaitForNextTickAsync(cancellationToken).ConfigureAwait(false))
            {
                await ProbeAllAsync(cancellationToken).ConfigureAwait(false);
            }
        }
        catch (OperationCanceledException) when (cancellationToken.IsCancellationRequested)
        {
        }
    }

    private async Task ProbeAsync(PocketAdminClient server, CancellationToken cancellationToken)
    {
        var address = server.MetadataAddress;
        ServerState state;
        lock (_servers)
        {
            // A server the metadata-plane scaler added since the watch started is watched from its first probe.
            state = _servers.TryGetValue(address, out var known) ? known : _servers[address] = new ServerState();
        }

        if (state.Replacing)
        {
            return;
        }

        string? failure = null;
        using (var timeout = new CancellationTokenSource(_options.ProbeTimeout, _time))
        using (var linked = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken, timeout.Token))
        {
            try
            {
                await server.GetNodesAsync(linked.Token).ConfigureAwait(false);
            }
            catch (OperationCanceledException) when (timeout.IsCancellationRequested && !cancellationToken.IsCancellationRequested)
            {
                failure = string.Create(CultureInfo.InvariantCulture, $"no answer within {_options.ProbeTimeout.TotalSeconds:0.#} s");
            }
            catch (Exception ex) when (ex is PocketException or IOException or ObjectDisposedException)
            {
                failure = ex.Message;
            }
        }

        if (failure is null)
        {
            state.Failures = 0;
            state.Down = null;
            if (state.Lost)
            {
                // Back (replaced by someone else, or it was only cut off): jobs may be placed on it again.
                state.Lost = false;
                _plane.SetUp(address, up: true);
            }

            return;
        }

        if (state.Lost)
        {
            state.Down = state.Down is { } down ? down with { Error = failure } : new MetadataOutage(address, _time.GetUtcNow(), MetadataOutage.Lost, failure);
            if (_provisioner is not null && _time.GetUtcNow() >= state.RetryAfter)
            {
                StartReplacing(address, state, cancellationToken);
            }

            return;
        }

        state.Failures++;
        state.Down = new MetadataOutage(address, state.Down?.Since ?? _time.GetUtcNow(), MetadataOutage.NotAnswering, failure);
        ControllerLog.MetadataProbeFailed(_logger, address, state.Failures, _options.FailedProbes, failure);
        if (state.Failures < _options.FailedProbes)
        {
            return;
        }

        await LoseAsync(address, state, failure, cancellationToken).ConfigureAwait(false);
        if (_provisioner is not null)
        {
            StartReplacing(address, state, cancellationToken);
        }
    }

    /// <summary>
    /// The servers that fail their probes, are lost or are being replaced, with since when (for <c>/healthz</c>); empty
    /// when every server answered its last probe.
    /// </summary>
    public IReadOnlyList<MetadataOutage> Outages()
    {
        // Only servers in the plane now: one the metadata-plane scaler stopped is gone, not down.
        var inPlane = _plane.Servers.Select(s => s.MetadataAddress).ToHashSet(StringComparer.OrdinalIgnoreCase);
        lock (_servers)
        {
            return [.. _servers.Where(s => inPlane.Contains(s.Key)).Select(s => s.Value.Down).OfType<MetadataOutage>().OrderBy(o => o.Since)];
        }
    }

    /// <summary>Replacements under way (completed when idle); for tests and orderly shutdown.</summary>
    public Task Current
    {
        get
        {
            lock (_servers)
            {
                return _work;
            }
        }
    }

    // In the background: a start takes seconds, and the other servers' probes must not wait for it.
    private void StartReplacing(string address, ServerState state, CancellationToken cancellationToken)
    {
        state.Replacing = true;
        state.Down = (state.Down ?? new MetadataOutage(address, _time.GetUtcNow(), MetadataOutage.Replacing, null)) with { State = MetadataOutage.Replacing };
        lock (_servers)
        {
            _work = Task.WhenAll(_work, ReplaceAsync(address, state, cancellationToken));
        }
    }

    private async Task LoseAsync(string address, ServerState state, string failure, CancellationToken cancellationToken)
    {
        state.Lost = true;
        state.LostAt = _time.GetUtcNow();
        state.Down = new MetadataOutage(address, state.Down?.Since ?? state.LostAt, MetadataOutage.Lost, failure);
        _plane.SetUp(address, up: false);
        var jobs = await _registry.LoseJobsOnAsync(address, cancellationToken).ConfigureAwait(false);
        state.LostJobs = [.. state.LostJobs, .. jobs.Select(j => new LostJobLine(j.Token, j.Id, state.LostAt))];
        var reason = string.Create(
            CultureInfo.InvariantCulture,
            $"metadata server {address} failed {state.Failures} probes in a row ({failure}); its {jobs.Count} jobs are lost{(jobs.Count == 0 ? string.Empty : ": " + string.Join(", ", jobs.Select(j => j.Id).Take(20)) + (jobs.Count > 20 ? ", ..." : string.Empty))}");
        ControllerLog.MetadataLost(_logger, address, failure, jobs.Count);
        _events.Add(new ClusterEvent(state.LostAt, "metadata-lost", null, reason));
    }

    private async Task ReplaceAsync(string address, ServerState state, CancellationToken cancellationToken)
    {
        var index = _plane.SlotOf(address);
        var colon = address.LastIndexOf(':');
        var port = int.Parse(address.AsSpan(colon + 1), CultureInfo.InvariantCulture);
        _events.Add(new ClusterEvent(_time.GetUtcNow(), "metadata-replacing", null, $"starting a metadata server at {address} in place of the lost one; it answers its {state.LostJobs.Count} lost jobs JobLost"));
        try
        {
            var request = new MetadataServerRequest(port, Math.Max(0, index), _plane.Slots.Count) { LostJobs = state.LostJobs };
            var started = await _provisioner!.StartMetadataAsync(request, cancellationToken).ConfigureAwait(false);
            if (!string.Equals(started.Address, address, StringComparison.OrdinalIgnoreCase))
            {
                // The plane, the nodes and the lost jobs' clients all know the old address: another one serves nobody.
                await _provisioner.StopMetadataAsync(started, CancellationToken.None).ConfigureAwait(false);
                throw new ProvisioningException($"the replacement came up at {started.Address}, not {address}");
            }

            state.Lost = false;
            state.Failures = 0;
            state.LostJobs = [];
            state.Down = null;
            _plane.SetStarted(address, started);
            _plane.SetUp(address, up: true);
            var detail = string.Create(CultureInfo.InvariantCulture, $"a new metadata server (process {started.Handle}) serves at {address}, {(_time.GetUtcNow() - state.LostAt).TotalSeconds:0.0} s after the old one was declared lost");
            ControllerLog.MetadataReplaced(_logger, address, detail);
            _events.Add(new ClusterEvent(_time.GetUtcNow(), "metadata-replaced", null, detail));
        }
        catch (OperationCanceledException) when (cancellationToken.IsCancellationRequested)
        {
        }
        catch (Exception ex) when (ex is ProvisioningException or IOException or UnauthorizedAccessException or ArgumentException)
        {
            state.RetryAfter = _time.GetUtcNow() + _options.RetryPause;
            state.Down = (state.Down ?? new MetadataOutage(address, state.LostAt, MetadataOutage.Lost, null)) with { State = MetadataOutage.Lost, Error = $"replacement failed: {ex.Message}" };
            ControllerLog.MetadataReplaceFailed(_logger, address, ex.Message);
            _events.Add(new ClusterEvent(_time.GetUtcNow(), "metadata-replace-failed", null, string.Create(CultureInfo.InvariantCulture, $"no replacement for lost metadata server {address}: {ex.Message}; trying again in {_options.RetryPause.TotalSeconds:0} s")));
        }
        finally
        {
            state.Replacing = false;
        }
    }

    public async ValueTask DisposeAsync()
    {
        await _stop.CancelAsync().ConfigureAwait(false);
        await _loop.ConfigureAwait(ConfigureAwaitOptions.SuppressThrowing);
        await Current.ConfigureAwait(ConfigureAwaitOptions.SuppressThrowing);
        _stop.Dispose();
    }
}
