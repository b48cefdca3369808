using System.Globalization;
using Microsoft.Extensions.Logging;
using Pocket.Admin;
using Pocket.Client;
using Pocket.Controller.Jobs;
using Pocket.Controller.Provisioning;
using Pocket.Protocol;
using Pocket.Protocol.Messages;

namespace Pocket.Controller.Scaling;

/// <summary>
/// The metadata plane's load and size (docs/controller.md, "Scaling the metadata plane"). Each telemetry tick it reads
/// every metadata server's load (<see cref="PocketAdminClient.GetServerLoadAsync"/>: CPU and job requests per second
/// over the server's own clock, for placement, <c>/v1/cluster</c> and the metrics); with
/// <see cref="ControllerOptions.MetadataScaling"/> set it then runs <see cref="MetadataScalingPolicy"/>: above the band
/// it starts a server at the next spare address (event <c>metadata-scale-up</c>), which takes jobs once the storage
/// nodes have joined it (<c>metadata-serving</c>); below the band it drains one (<c>metadata-draining</c>: no new job is
/// placed on it) and stops it once its jobs have ended and it holds no block (<c>metadata-stopped</c>); the nodes then
/// hand its segments to the other servers by themselves. A start or stop runs in the background (<see cref="Current"/>).
/// </summary>
internal sealed class MetadataScaler : IAsyncDisposable
{
    /// <summary>Readings closer than this on the server's clock are not differenced (too short to mean anything).</summary>
    private static readonly TimeSpan MinimumWindow = TimeSpan.FromMilliseconds(500);

    private readonly MetadataPlane _plane;
    private readonly JobRegistry _registry;
    private readonly IMetadataProvisioner? _provisioner;
    private readonly MetadataScalingOptions? _options;
    private readonly Func<string, CancellationToken, Task<PocketAdminClient>> _connect;
    private readonly int _minServers;
    private readonly TimeSpan _readTimeout;
    private readonly TimeProvider _time;
    private readonly ClusterEventLog _events;
    private readonly ILogger _logger;
    private readonly Dictionary<string, ServerLoad> _last = new(StringComparer.OrdinalIgnoreCase);
    private readonly Dictionary<string, DateTimeOffset> _joiningSince = new(StringComparer.OrdinalIgnoreCase);
    private readonly Dictionary<string, string> _waiting = new(StringComparer.OrdinalIgnoreCase);
    private readonly Dictionary<string, DateTimeOffset> _drainingSince = new(StringComparer.OrdinalIgnoreCase);
    private readonly List<PocketAdminClient> _connected = [];
    private MetadataScalingState _state = MetadataScalingState.Initial;
    private Task _action = Task.CompletedTask;

    /// <param name="plane">The servers.</param>
    /// <param name="registry">Their jobs.</param>
    /// <param name="provisioner">Starts and stops servers; needed when <paramref name="options"/> is set.</param>
    /// <param name="options">The band; null reads the load only.</param>
    /// <param name="connect">Opens an admin client to a server the scaler started.</param>
    /// <param name="readTimeout">How long one load reading may take.</param>
    /// <param name="time">The controller's clock (the policy's durations).</param>
    /// <param name="events">Where decisions go.</param>
    /// <param name="logger">Where failures go.</param>
    public MetadataScaler(MetadataPlane plane, JobRegistry registry, IMetadataProvisioner? provisioner, MetadataScalingOptions? options, Func<string, CancellationToken, Task<PocketAdminClient>> connect, TimeSpan readTimeout, TimeProvider time, ClusterEventLog events, ILogger logger)
    {
        if (options is not null && provisioner is null)
        {
            throw new ArgumentException("scaling the metadata plane needs a provisioner that starts metadata servers (the local one, as pocket up uses, or the Kubernetes one)");
        }

        _plane = plane;
        _registry = registry;
        _provisioner = provisioner;
        _options = options;
        _connect = connect;
        _minServers = plane.Servers.Count;
        _readTimeout = readTimeout;
        _time = time;
        _events = events;
        _logger = logger;
    }

    /// <summary>A server start or stop under way (completed when idle); for tests and orderly shutdown.</summary>
    public Task Current
    {
        get
        {
            lock (_last)
            {
                return _action;
            }
        }
    }

    /// <summary>One tick: read every server's load, then (when scaling) move joining and draining servers on and decide.</summary>
    /// <param name="samples">Every node as the plane lists it now (a joining server serves once it lists the live ones).</param>
    /// <param name="cancellationToken">Ends with the telemetry.</param>
    public async Task OnSampleAsync(IReadOnlyList<NodeSample> samples, CancellationToken cancellationToken)
    {
        await ReadLoadsAsync(cancellationToken).ConfigureAwait(false);
        if (_options is null || !Current.IsCompleted)
        {
            return;
        }

        await AdvanceAsync(samples, cancellationToken).ConfigureAwait(false);
        if (!Current.IsCompleted)
        {
            return;
        }

        var servers = _plane.Servers;
        var primary = servers[0].MetadataAddress;
        var now = _time.GetUtcNow();
        var sample = servers
            .Where(_plane.IsUp)
            .Select(s =>
            {
                var address = s.MetadataAddress;
                var usage = _plane.UsageOf(address);
                return new MetadataServerSample(
                    address,
                    _plane.StateOf(address) == MetadataServerState.Draining,
                    usage?.Cpu,
                    usage?.RequestsPerSecond,
                    _registry.JobsOn(address),
                    !string.Equals(address, primary, StringComparison.OrdinalIgnoreCase) && _plane.StartedAt(address) is not null);
            })
            .ToList();
        var joining = servers.Any(s => _plane.StateOf(s.MetadataAddress) == MetadataServerState.Joining);
        (var decision, _state) = MetadataScalingPolicy.Decide(sample, _minServers, _plane.Slots.Count, joining, _options, _state, now);
        switch (decision.Action)
        {
            case MetadataScalingAction.AddServer:
                var slot = _plane.Slots.FirstOrDefault(a => !servers.Any(s => string.Equals(s.MetadataAddress, a, StringComparison.OrdinalIgnoreCase)));
                if (slot is not null)
                {
                    lock (_last)
                    {
                        _action = AddAsync(slot, decision.Reason, cancellationToken);
                    }
                }

                break;
            case MetadataScalingAction.ResumeServer:
                _plane.SetState(decision.Address!, MetadataServerState.Serving);
                Record("metadata-resumed", decision.Address!, decision.Reason);
                break;
            case MetadataScalingAction.DrainServer:
                _plane.SetState(decision.Address!, MetadataServerState.Draining);
                _drainingSince[decision.Address!] = now;
                Record("metadata-draining", decision.Address!, decision.Reason);
                break;
        }
    }

    /// <summary>Each server's counters, differenced against the last reading on its own clock; a server that does not answer keeps its last figures.</summary>
    private async Task ReadLoadsAsync(CancellationToken cancellationToken)
    {
        var servers = _plane.Servers;
        var reads = servers.Select(s => ReadAsync(s, cancellationToken)).ToArray();
        await Task.WhenAll(reads).ConfigureAwait(false);
        var now = _time.GetUtcNow();
        for (var i = 0; i < servers.Count; i++)
        {
            if (reads[i].Result is not { } load)
            {
                continue;
            }

            var address = servers[i].MetadataAddress;
            if (!_last.TryGetValue(address, out var before) || load.UptimeSeconds < before.UptimeSeconds)
            {
                // A first reading, or a new process at the address (a replacement): nothing to difference yet.
                _last[address] = load;
                continue;
            }

            var seconds = load.UptimeSeconds - before.UptimeSeconds;
            if (seconds < MinimumWindow.TotalSeconds)
            {
                continue;
            }

            var cpu = Math.Max(0, load.CpuSeconds - before.CpuSeconds) / seconds;
            _plane.SetUsage(address, new MetadataServerUsage(cpu, cpu / load.Processors, Math.Max(0, load.JobRequests - before.JobRequests) / seconds, now));
            _last[address] = load;
        }
    }

    private async Task<ServerLoad?> ReadAsync(PocketAdminClient server, CancellationToken cancellationToken)
    {
        using var timeout = new CancellationTokenSource(_readTimeout, _time);
        using var linked = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken, timeout.Token);
        try
        {
            return await server.GetServerLoadAsync(linked.Token).ConfigureAwait(false);
        }
        catch (Exception ex) when (ex is PocketException or IOException or ObjectDisposedException || (ex is OperationCanceledException && !cancellationToken.IsCancellationRequested))
        {
            // A lost server is the watch's business; an older one does not report its load (it is placed on by jobs alone).
            ControllerLog.MetadataLoadUnread(_logger, server.MetadataAddress, ex.Message);
            return null;
        }
    }

    /// <summary>A joining server serves once every live node lists a share on it; a draining one with no job and no block is stopped.</summary>
    private async Task AdvanceAsync(IReadOnlyList<NodeSample> samples, CancellationToken cancellationToken)
    {
        var now = _time.GetUtcNow();
        foreach (var server in _plane.Servers.Skip(1))
        {
            var address = server.MetadataAddress;
            switch (_plane.StateOf(address))
            {
                case MetadataServerState.Joining:
                    await JoinAsync(server, samples, now, cancellationToken).ConfigureAwait(false);
                    break;
                case MetadataServerState.Draining when _registry.JobsOn(address) == 0 && _plane.StartedAt(address) is not null:
                    await StopIfEmptyAsync(server, cancellationToken).ConfigureAwait(false);
                    break;
            }
        }
    }

    private async Task JoinAsync(PocketAdminClient server, IReadOnlyList<NodeSample> samples, DateTimeOffset now, CancellationToken cancellationToken)
    {
        var address = server.MetadataAddress;
        var since = _joiningSince.TryGetValue(address, out var at) ? at : _joiningSince[address] = now;
        var live = samples.Where(s => s.State == NodeState.Live).Select(s => s.NodeId).ToHashSet();
        IReadOnlyList<NodeInfo> listed;
        try
        {
            listed = await server.GetNodesAsync(cancellationToken).ConfigureAwait(false);
        }
        catch (Exception ex) when (ex is PocketException or IOException)
        {
            return;
        }

        var missing = live.Where(id => !listed.Any(n => n.Id == id && n.State == NodeState.Live && n.Capacity > 0)).ToList();
        if (missing.Count > 0 && now - since < _options!.JoinTimeout)
        {
            return;
        }

        _plane.SetState(address, MetadataServerState.Serving);
        _joiningSince.Remove(address);
        var shared = listed.Count(n => n.State == NodeState.Live && n.Capacity > 0);
        Record("metadata-serving", address, missing.Count == 0
            ? string.Create(CultureInfo.InvariantCulture, $"{address} takes jobs: {shared} live node{(shared == 1 ? "" : "s")} gave it a share, {(now - since).TotalSeconds:0.#} s after it started")
            : string.Create(CultureInfo.InvariantCulture, $"{address} takes jobs without nodes {string.Join(", ", missing)}, which did not join it within {_options!.JoinTimeout.TotalSeconds:0} s (were they started without its address?)"));
    }

    private async Task StopIfEmptyAsync(PocketAdminClient server, CancellationToken cancellationToken)
    {
        var address = server.MetadataAddress;
        var started = _plane.StartedAt(address);

        // Under the registration gate: no registration can be placing a job on it between this check and its removal.
        var (stop, wait) = await _registry.WithoutRegistrationsAsync(
            async () =>
            {
                if (_registry.JobsOn(address) > 0 || _plane.StateOf(address) != MetadataServerState.Draining)
                {
                    return (false, (string?)null);
                }

                // Objects kept after their job (keep-after-job) still hold blocks in its share, or live inline in the
                // server itself, where no node's use shows them: it waits for both.
                var nodes = await server.GetNodesAsync(cancellationToken).ConfigureAwait(false);
                var held = nodes.Sum(n => n.Used);
                var load = await ReadAsync(server, cancellationToken).ConfigureAwait(false);
                if (held > 0 || load is { HeldObjects: > 0 })
                {
                    return (false, string.Create(
                        CultureInfo.InvariantCulture,
                        $"{address} drains: its jobs have ended, but it still holds {load?.HeldObjects.ToString(CultureInfo.InvariantCulture) ?? "some"} objects kept after their job ({held} bytes in node blocks, {load?.HeldInlineBytes ?? 0} bytes inline); it stops when they expire"));
                }

                if (load is null)
                {
                    // Unread (a slow answer): its inline objects are unknown, so it is not stopped on this tick.
                    return (false, (string?)null);
                }

                _plane.Remove(address);
                return (true, null);
            },
            cancellationToken).ConfigureAwait(false);
        if (wait is not null && _waiting.GetValueOrDefault(address) != wait)
        {
            _waiting[address] = wait;
            Record("metadata-draining", address, wait);
        }

        if (!stop)
        {
            return;
        }

        _waiting.Remove(address);
        _last.Remove(address);
        var drainedFor = _time.GetUtcNow() - (_drainingSince.Remove(address, out var since) ? since : _time.GetUtcNow());
        lock (_last)
        {
            _action = StopAsync(server, started, drainedFor, cancellationToken);
        }
    }

    private async Task StopAsync(PocketAdminClient server, ProvisionedMetadata? started, TimeSpan drainedFor, CancellationToken cancellationToken)
    {
        var address = server.MetadataAddress;
        try
        {
            if (started is not null)
            {
                await _provisioner!.StopMetadataAsync(started, cancellationToken).ConfigureAwait(false);
            }

            Record("metadata-stopped", address, string.Create(CultureInfo.InvariantCulture, $"{address} had no job left and held no block: stopped (process {started?.Handle}) {drainedFor.TotalSeconds:0} s after it began draining; the storage nodes hand its segments to the other metadata servers"));
        }
        catch (Exception ex) when (ex is ProvisioningException or IOException or ArgumentException or InvalidOperationException)
        {
            Failed($"stopping drained metadata server {address} failed: {ex.Message}");
        }
        finally
        {
            await DisposeClientAsync(server).ConfigureAwait(false);
        }
    }

    private async Task AddAsync(string address, string reason, CancellationToken cancellationToken)
    {
        Record("metadata-scale-up", address, $"{reason}, at {address}");
        ProvisionedMetadata? started = null;
        try
        {
            var colon = address.LastIndexOf(':');
            var port = int.Parse(address.AsSpan(colon + 1), CultureInfo.InvariantCulture);
            started = await _provisioner!.StartMetadataAsync(new MetadataServerRequest(port, _plane.SlotOf(address), _plane.Slots.Count), cancellationToken).ConfigureAwait(false);
            if (!string.Equals(started.Address, address, StringComparison.OrdinalIgnoreCase))
            {
                // The nodes know the spare address, not another: a server elsewhere would get no share of any node.
                throw new ProvisioningException($"the new metadata server came up at {started.Address}, not {address}");
            }

            var admin = await _connect(address, cancellationToken).ConfigureAwait(false);
            lock (_connected)
            {
                _connected.Add(admin);
            }

            _joiningSince[address] = _time.GetUtcNow();
            _plane.Add(admin, started);
        }
        catch (OperationCanceledException) when (cancellationToken.IsCancellationRequested)
        {
            await StopQuietlyAsync(started).ConfigureAwait(false);
        }
        catch (Exception ex) when (ex is ProvisioningException or PocketException or IOException or ArgumentException or UnauthorizedAccessException)
        {
            await StopQuietlyAsync(started).ConfigureAwait(false);
            Failed($"no metadata server started at {address}: {ex.Message}");
        }
    }

    private async Task StopQuietlyAsync(ProvisionedMetadata? started)
    {
        if (started is null)
        {
            return;
        }

        try
        {
            await _provisioner!.StopMetadataAsync(started, CancellationToken.None).ConfigureAwait(false);
        }
        catch (Exception ex) when (ex is ProvisioningException or IOException or ArgumentException or InvalidOperationException)
        {
            ControllerLog.MetadataScaleFailed(_logger, $"could not stop metadata process {started.Handle}: {ex.Message}");
        }
    }

    private void Record(string kind, string address, string reason)
    {
        ControllerLog.MetadataScaled(_logger, kind, address, reason);
        _events.Add(new ClusterEvent(_time.GetUtcNow(), kind, null, reason));
    }

    private void Failed(string reason)
    {
        ControllerLog.MetadataScaleFailed(_logger, reason);
        _events.Add(new ClusterEvent(_time.GetUtcNow(), "metadata-scale-failed", null, reason));
    }

    private async Task DisposeClientAsync(PocketAdminClient server)
    {
        bool mine;
        lock (_connected)
        {
            mine = _connected.Remove(server);
        }

        if (mine)
        {
            await server.Client.DisposeAsync().ConfigureAwait(false);
        }
    }

    public async ValueTask DisposeAsync()
    {
        await Current.ConfigureAwait(ConfigureAwaitOptions.SuppressThrowing);
        List<PocketAdminClient> clients;
        lock (_connected)
        {
            clients = [.. _connected];
            _connected.Clear();
        }

        foreach (var client in clients)
        {
            await client.Client.DisposeAsync().ConfigureAwait(false);
        }
    }
}
