using System.Globalization;
using Microsoft.Extensions.Logging;
using Pocket.Admin;
using Pocket.Client;
using Pocket.Controller.Contracts;
using Pocket.Controller.Provisioning;
using Pocket.Controller.Scaling;
using Pocket.Controller.Sizing;
using Pocket.Protocol;

namespace Pocket.Controller.Jobs;

/// <summary>A job the controller registered: its sizing, where it lives and its lease.</summary>
/// <param name="Id">Job id from the metadata server, e.g. "sort-3".</param>
/// <param name="Name">The name it registered with.</param>
/// <param name="Token">Its secret; only the registration answer shows it.</param>
/// <param name="Hints">The hints it gave.</param>
/// <param name="Requirement">Tier, throughput, capacity and nodes needed from the hints.</param>
/// <param name="Shares">Its slice of each node, which the controller holds for it until it ends.</param>
/// <param name="Weights">Shares as a weight map (what the metadata server places by).</param>
/// <param name="RegisteredAt">When it registered.</param>
/// <param name="LeaseExpiresAt">When it is reclaimed unless it makes a request before.</param>
public sealed record JobRecord(
    string Id,
    string Name,
    JobToken Token,
    JobHints Hints,
    JobRequirement Requirement,
    IReadOnlyList<NodeShare> Shares,
    WeightMap Weights,
    DateTimeOffset RegisteredAt,
    DateTimeOffset LeaseExpiresAt)
{
    /// <summary>The limits the metadata server enforces for it (<see cref="JobSizer.QuotaFor"/>).</summary>
    public JobQuota Quota { get; init; }

    /// <summary>The metadata server holding its namespace, host:port (what the registration answer names).</summary>
    public string? MetadataAddress { get; init; }

    /// <summary>How long it may go without a request before it is reclaimed (its hint, or the registry's default).</summary>
    public TimeSpan Lease { get; init; } = TimeSpan.FromMinutes(5);

    /// <summary>The id only: a record's generated text would print the token into logs and error messages.</summary>
    public override string ToString() => $"job {Id}";
}

/// <summary>Why a job ended.</summary>
public enum JobEndReason
{
    /// <summary>It (or an operator) deregistered it.</summary>
    Deregistered,

    /// <summary>It made no request for a whole lease.</summary>
    LeaseExpired,

    /// <summary>The metadata server no longer knows it (restarted, or the job was removed there directly).</summary>
    Vanished,

    /// <summary>Its metadata server was lost (killed, crashed): its namespace, and so its objects, went with it.</summary>
    Lost,
}

/// <summary>What ending a job freed.</summary>
public sealed record EndedJob(JobRecord Job, JobEndReason Reason, long ObjectsFreed, long BytesFreed);

/// <summary>A job that ended lately: what a request naming it is told instead of a bare "no job".</summary>
/// <param name="Id">Its id.</param>
/// <param name="Name">The name it registered with.</param>
/// <param name="Reason">Why it ended.</param>
/// <param name="EndedAt">When.</param>
public sealed record JobEnding(string Id, string Name, JobEndReason Reason, DateTimeOffset EndedAt)
{
    /// <summary>One line for an error message, e.g. "job 'sort-3' ended at 2026-12-04 10:01:02Z: lease expired".</summary>
    public string Describe() =>
        string.Create(CultureInfo.InvariantCulture, $"job '{Id}' ended at {EndedAt:u}: {JobRegistry.ReasonText(Reason)}");
}

/// <summary>Bandwidth and bytes of one node promised to jobs.</summary>
public readonly record struct NodeAllocation(double BitsPerSecond, double Bytes);

/// <summary>
/// The controller's jobs. Registration sizes the job from its hints, starts nodes through the provisioner when the
/// running ones lack room, creates the job on the metadata server and sends its weight map; deregistration (or an
/// expired lease) frees its data and gives its shares of the nodes back.
/// </summary>
public sealed class JobRegistry : IAsyncDisposable
{
    // A provisioner may start nodes smaller than the class assumed; this many rounds of "start what is still missing" are tried.
    private const int MaxProvisionRounds = 3;

    private readonly MetadataPlane _plane;
    private readonly IStorageProvisioner? _provisioner;
    private readonly NodeInventory _inventory;
    private readonly JobRegistryOptions _options;
    private readonly TimeProvider _time;
    private readonly ILogger _logger;
    private readonly Lock _lock = new();
    private readonly Dictionary<string, JobRecord> _jobs = new(StringComparer.Ordinal);
    private readonly Dictionary<string, long> _lastRequests = new(StringComparer.Ordinal);
    private readonly Dictionary<uint, NodeAllocation> _allocated = [];

    // Ended jobs, oldest first, so that a request naming one says what became of it; bounded by count and age.
    private readonly Dictionary<string, JobEnding> _ended = new(StringComparer.Ordinal);
    private readonly Queue<JobEnding> _endedOrder = new();

    // One registration at a time: each plans against the shares the previous one took.
    private readonly SemaphoreSlim _registrationGate = new(1, 1);
    private readonly SemaphoreSlim _leaseGate = new(1, 1);
    private readonly CancellationTokenSource _stop = new();
    private ITimer? _leaseTimer;
    private int _leaseTickPending;

    /// <summary>
    /// Makes a registry that administers the cluster through <paramref name="admin"/> (which must hold the cluster
    /// token) and starts nodes through <paramref name="provisioner"/> (null: a fixed cluster).
    /// </summary>
    public JobRegistry(PocketAdminClient admin, IStorageProvisioner? provisioner, JobRegistryOptions options, ILoggerFactory loggerFactory)
        : this(admin, provisioner, options, loggerFactory, new NodeInventory(pool: null))
    {
    }

    /// <summary>A registry that claims warm-pool nodes from, and records the nodes it starts in, <paramref name="inventory"/>.</summary>
    internal JobRegistry(PocketAdminClient admin, IStorageProvisioner? provisioner, JobRegistryOptions options, ILoggerFactory loggerFactory, NodeInventory inventory)
        : this(new MetadataPlane([admin]), provisioner, options, loggerFactory, inventory)
    {
    }

    /// <summary>A registry that places each job on one of the plane's metadata servers.</summary>
    internal JobRegistry(MetadataPlane plane, IStorageProvisioner? provisioner, JobRegistryOptions options, ILoggerFactory loggerFactory, NodeInventory inventory)
    {
        options.Validate();
        _plane = plane;
        _provisioner = provisioner;
        _inventory = inventory;
        _options = options;
        _time = options.TimeProvider;
        _logger = loggerFactory.CreateLogger<JobRegistry>();
        Sizer = new JobSizer(options.Sizing);
    }

    /// <summary>The sizing rules in use.</summary>
    public JobSizer Sizer { get; }

    /// <summary>The settings in use.</summary>
    public JobRegistryOptions Options => _options;

    /// <summary>Raised after a job ended, whatever the reason.</summary>
    public event Action<EndedJob>? JobEnded;

    /// <summary>Every job, oldest first.</summary>
    public IReadOnlyList<JobRecord> Jobs
    {
        get
        {
            lock (_lock)
            {
                return [.. _jobs.Values.OrderBy(j => j.RegisteredAt).ThenBy(j => j.Id, StringComparer.Ordinal)];
            }
        }
    }

    /// <summary>What jobs hold of each node.</summary>
    public IReadOnlyDictionary<uint, NodeAllocation> Allocations
    {
        get
        {
            lock (_lock)
            {
                return new Dictionary<uint, NodeAllocation>(_allocated);
            }
        }
    }

    /// <summary>The job with this id, or null.</summary>
    public JobRecord? Find(string jobId)
    {
        lock (_lock)
        {
            return _jobs.GetValueOrDefault(jobId);
        }
    }

    /// <summary>
    /// How the job with this id ended, if it ended within <see cref="JobRegistryOptions.EndedJobMemory"/> (at most the
    /// last <see cref="JobRegistryOptions.EndedJobsKept"/> endings are kept); null if it is live or unknown.
    /// </summary>
    public JobEnding? FindEnded(string jobId)
    {
        lock (_lock)
        {
            ForgetOldEndings();
            return _jobs.ContainsKey(jobId) ? null : _ended.GetValueOrDefault(jobId);
        }
    }

    /// <summary>Starts the lease clock.</summary>
    public void Start()
    {
        var interval = _options.LeaseCheckInterval;
        _leaseTimer ??= _time.CreateTimer(_ => OnLeaseTick(), null, interval, interval);
    }

    /// <summary>
    /// Registers a job: sizes it, starts missing nodes (waiting for them), creates it on the metadata server and
    /// sends its weight map.
    /// </summary>
    /// <exception cref="ArgumentException">The name or a hint is invalid; ParamName names the field.</exception>
    /// <exception cref="SizingException">The job does not fit any available tier within the limits.</exception>
    /// <exception cref="ProvisioningException">Nodes were needed and could not be started in time.</exception>
    public async Task<JobRecord> RegisterAsync(string name, JobHints hints, CancellationToken cancellationToken = default)
    {
        if (!JobName.IsValid(name))
        {
            throw new ArgumentException($"a job name is {JobName.Rule}", nameof(name));
        }

        hints.Validate();
        var lease = hints.Lease ?? _options.LeaseDuration;
        if (lease > _options.MaxLeaseDuration)
        {
            throw new ArgumentException($"lease {FormatLease(lease)} is longer than this controller allows ({FormatLease(_options.MaxLeaseDuration)})", "lease");
        }

        if (lease < _options.LeaseCheckInterval)
        {
            throw new ArgumentException($"lease {FormatLease(lease)} is shorter than the controller's lease check ({FormatLease(_options.LeaseCheckInterval)})", "lease");
        }

        await _registrationGate.WaitAsync(cancellationToken).ConfigureAwait(false);
        try
        {
            // The job's namespace lives on one metadata server; sizing reads that server's view (its share of each node).
            var admin = ChooseServer();
            var nodes = await admin.GetNodesAsync(cancellationToken).ConfigureAwait(false);
            var requirement = Sizer.Size(hints, AvailableTiers(nodes));
            var placement = Plan(requirement, nodes, admin.MetadataAddress);
            for (var round = 0; !placement.IsComplete && round < MaxProvisionRounds; round++)
            {
                nodes = await StartNodesAsync(admin, name, requirement, placement.NewNodes, nodes, cancellationToken).ConfigureAwait(false);
                placement = Plan(requirement, nodes, admin.MetadataAddress);
            }

            if (!placement.IsComplete)
            {
                throw new ProvisioningException(
                    $"started nodes offer less than the {NodeTierNames.Name(requirement.Tier)} node class assumes "
                    + $"({Units.FormatBytes(requirement.NodeClass.CapacityBytes)}); {placement.NewNodes} more nodes would still be needed");
            }

            var weights = WeightMap.From(placement);

            // One round trip: the metadata server creates the job with its tier and weights, so there is never a job
            // without its placement to undo.
            var quota = Sizer.QuotaFor(requirement, hints);
            var job = await admin.RegisterJobAsync(name, requirement.Tier, weights.Weights, quota, cancellationToken).ConfigureAwait(false);

            var now = _time.GetUtcNow();
            var record = new JobRecord(job.Id, name, job.Token, hints, requirement, placement.Shares, weights, now, now + lease) { Quota = quota, Lease = lease, MetadataAddress = admin.MetadataAddress };
            lock (_lock)
            {
                foreach (var share in placement.Shares)
                {
                    var held = _allocated.GetValueOrDefault(share.NodeId);
                    _allocated[share.NodeId] = new NodeAllocation(held.BitsPerSecond + share.BitsPerSecond, held.Bytes + share.Bytes);
                }

                _jobs[record.Id] = record;
                _lastRequests[record.Id] = 0;
            }

            ControllerLog.JobRegistered(
                _logger,
                record.Id,
                NodeTierNames.Name(requirement.Tier),
                Units.FormatBitsPerSecond(requirement.ThroughputBitsPerSecond),
                Units.FormatBytes(requirement.CapacityBytes),
                requirement.NodesNeeded,
                requirement.ThroughputBound ? "throughput" : "capacity",
                string.Join(", ", weights.Weights.Select(w => string.Create(CultureInfo.InvariantCulture, $"{w.Key}={w.Value:0.###}"))));
            return record;
        }
        catch (Exception ex) when (ex is SizingException or ProvisioningException or PocketException)
        {
            ControllerLog.RegistrationFailed(_logger, name, ex.Message);
            throw;
        }
        finally
        {
            _registrationGate.Release();
        }
    }

    /// <summary>The metadata servers jobs are placed on.</summary>
    internal MetadataPlane Plane => _plane;

    /// <summary>
    /// Ends every job on the metadata server at <paramref name="address"/> as <see cref="JobEndReason.Lost"/> (the server
    /// is gone, so nothing is sent to it): their shares of the nodes are freed. Returns the jobs ended.
    /// </summary>
    internal async Task<IReadOnlyList<JobRecord>> LoseJobsOnAsync(string address, CancellationToken cancellationToken)
    {
        List<JobRecord> lost = [];
        foreach (var job in Jobs.Where(j => IsOn(j, address)))
        {
            if (await EndAsync(job.Id, JobEndReason.Lost, cancellationToken).ConfigureAwait(false) is { } ended)
            {
                lost.Add(ended.Job);
            }
        }

        return lost;
    }

    /// <summary>The metadata server holding <paramref name="job"/>'s namespace.</summary>
    internal PocketAdminClient AdminOf(JobRecord job) => _plane.For(job.MetadataAddress);

    /// <summary>
    /// The least loaded metadata server (<see cref="MetadataPlane.Choose"/>): by its CPU as last measured (unless
    /// <see cref="JobRegistryOptions.PlaceByCpu"/> is off), then the controller's own records of its jobs. Lost, joining
    /// and draining servers get no job.
    /// </summary>
    private PocketAdminClient ChooseServer()
    {
        var servers = _plane.Servers;
        if (servers.Count == 1)
        {
            return servers[0];
        }

        var load = new MetadataLoad[servers.Count];
        for (var i = 0; i < load.Length; i++)
        {
            load[i] = _plane.Accepts(servers[i])
                ? new MetadataLoad(0, 0, _options.PlaceByCpu ? _plane.UsageOf(servers[i].MetadataAddress)?.Cpu ?? 0 : 0)
                : MetadataLoad.Full;
        }

        lock (_lock)
        {
            foreach (var job in _jobs.Values)
            {
                var index = IndexOf(job.MetadataAddress);
                if (index >= 0 && load[index].Jobs != int.MaxValue)
                {
                    load[index] = load[index] with { Jobs = load[index].Jobs + 1, Requests = load[index].Requests + _lastRequests.GetValueOrDefault(job.Id) };
                }
            }
        }

        return servers[MetadataPlane.Choose(load)];

        int IndexOf(string? address)
        {
            if (address is null)
            {
                return 0;
            }

            for (var i = 0; i < servers.Count; i++)
            {
                if (string.Equals(servers[i].MetadataAddress, address, StringComparison.OrdinalIgnoreCase))
                {
                    return i;
                }
            }

            return -1;
        }
    }

    /// <summary>
    /// Runs <paramref name="action"/> while no registration is under way, so a check that a metadata server has no job
    /// cannot miss one being placed on it (the metadata-plane scaler stops a drained server only then).
    /// </summary>
    internal async Task<T> WithoutRegistrationsAsync<T>(Func<Task<T>> action, CancellationToken cancellationToken)
    {
        await _registrationGate.WaitAsync(cancellationToken).ConfigureAwait(false);
        try
        {
            return await action().ConfigureAwait(false);
        }
        finally
        {
            _registrationGate.Release();
        }
    }

    /// <summary>The controller's running jobs on the metadata server at <paramref name="address"/>.</summary>
    internal int JobsOn(string address) =>
        Jobs.Count(j => IsOn(j, address));

    /// <summary>Deregisters a job: its data is freed at once and its shares return to the nodes. Null when the controller has no such job.</summary>
    public Task<EndedJob?> DeregisterAsync(string jobId, CancellationToken cancellationToken = default) =>
        EndAsync(jobId, JobEndReason.Deregistered, cancellationToken);

    /// <summary>
    /// One lease pass: reads every job's request count; a job that made requests since the last pass is renewed, a
    /// job whose lease ran out is ended. The timer runs this every <see cref="JobRegistryOptions.LeaseCheckInterval"/>.
    /// </summary>
    public async Task CheckLeasesAsync(CancellationToken cancellationToken = default)
    {
        await _leaseGate.WaitAsync(cancellationToken).ConfigureAwait(false);
        try
        {
            await CheckLeasesOnceAsync(cancellationToken).ConfigureAwait(false);
        }
        finally
        {
            _leaseGate.Release();
        }
    }

    private async Task CheckLeasesOnceAsync(CancellationToken cancellationToken)
    {
        var ending = new List<(string Id, JobEndReason Reason)>();
        foreach (var job in Jobs)
        {
            JobUsage usage;
            try
            {
                usage = await _plane.For(job.MetadataAddress).GetJobUsageAsync(job.Id, cancellationToken).ConfigureAwait(false);
            }
            catch (ObjectNotFoundException)
            {
                ending.Add((job.Id, JobEndReason.Vanished));
                continue;
            }
            catch (PocketException ex)
            {
                // Never reclaim a job whose activity cannot be seen: the metadata server may only be slow.
                ControllerLog.LeaseCheckFailed(_logger, job.Id, ex.Message);
                continue;
            }

            // Read after the round trip: the pass may have waited, and the lease is judged at the time of the answer.
            var now = _time.GetUtcNow();
            lock (_lock)
            {
                if (!_jobs.TryGetValue(job.Id, out var current))
                {
                    continue;
                }

                if (usage.Requests != _lastRequests.GetValueOrDefault(job.Id))
                {
                    _lastRequests[job.Id] = usage.Requests;
                    _jobs[job.Id] = current with { LeaseExpiresAt = now + current.Lease };
                }
                else if (now >= current.LeaseExpiresAt)
                {
                    ending.Add((job.Id, JobEndReason.LeaseExpired));
                }
            }
        }

        foreach (var (id, reason) in ending)
        {
            await EndAsync(id, reason, cancellationToken).ConfigureAwait(false);
        }
    }

    private void OnLeaseTick()
    {
        // Ticks that come while a pass runs are folded into one more pass, so the last tick is never lost
        // (a fake clock fires many ticks at once).
        if (Interlocked.Exchange(ref _leaseTickPending, 1) == 0)
        {
            _ = RunLeaseTicksAsync();
        }
    }

    private async Task RunLeaseTicksAsync()
    {
        try
        {
            await _leaseGate.WaitAsync(_stop.Token).ConfigureAwait(false);
            try
            {
                while (Interlocked.Exchange(ref _leaseTickPending, 0) == 1)
                {
                    await CheckLeasesOnceAsync(_stop.Token).ConfigureAwait(false);
                }
            }
            finally
            {
                _leaseGate.Release();
            }
        }
        catch (OperationCanceledException) when (_stop.IsCancellationRequested)
        {
        }
        catch (Exception ex)
        {
            ControllerLog.LeasePassFailed(_logger, ex, ex.Message);
        }
    }

    private async Task<EndedJob?> EndAsync(string jobId, JobEndReason reason, CancellationToken cancellationToken)
    {
        if (Find(jobId) is null)
        {
            return null;
        }

        // The metadata server first: if it cannot be reached the job stays, shares and all, and can be ended again.
        long objects = 0, bytes = 0;
        if (reason is not (JobEndReason.Vanished or JobEndReason.Lost))
        {
            try
            {
                (objects, bytes) = await _plane.For(Find(jobId)?.MetadataAddress).DeregisterJobAsync(jobId, reason == JobEndReason.LeaseExpired ? LeaseExpiredText(Find(jobId)) : null, cancellationToken).ConfigureAwait(false);
            }
            catch (ObjectNotFoundException)
            {
                // Gone there already (a concurrent end, or a restarted metadata server): only the shares remain to free.
            }
        }

        JobRecord? record;
        lock (_lock)
        {
            if (!_jobs.Remove(jobId, out record))
            {
                return null;
            }

            _lastRequests.Remove(jobId);
            RememberEnding(new JobEnding(jobId, record.Name, reason, _time.GetUtcNow()));
            foreach (var share in record.Shares)
            {
                var held = _allocated.GetValueOrDefault(share.NodeId);
                var left = new NodeAllocation(held.BitsPerSecond - share.BitsPerSecond, held.Bytes - share.Bytes);

                // Shares are doubles; what is left after the last job is rounding, not an allocation.
                if (left.BitsPerSecond <= 1e-3 && left.Bytes <= 1e-3)
                {
                    _allocated.Remove(share.NodeId);
                }
                else
                {
                    _allocated[share.NodeId] = new NodeAllocation(Math.Max(0, left.BitsPerSecond), Math.Max(0, left.Bytes));
                }
            }
        }

        var ended = new EndedJob(record, reason, objects, bytes);
        ControllerLog.JobEnded(_logger, jobId, ReasonText(reason), objects, bytes);
        try
        {
            JobEnded?.Invoke(ended);
        }
        catch (Exception ex)
        {
            // A subscriber's bug must not turn a finished deregistration into a failed one.
            ControllerLog.JobEndedHandlerFailed(_logger, ex, jobId);
        }

        return ended;
    }

    // Under _lock.
    private void RememberEnding(JobEnding ending)
    {
        _ended[ending.Id] = ending;
        _endedOrder.Enqueue(ending);
        ForgetOldEndings();
    }

    // Under _lock. An id ended twice (a name reused) keeps its latest ending: an older queue entry only drops its own.
    private void ForgetOldEndings()
    {
        var cutoff = _time.GetUtcNow() - _options.EndedJobMemory;
        while (_endedOrder.TryPeek(out var oldest) && (_endedOrder.Count > _options.EndedJobsKept || oldest.EndedAt < cutoff))
        {
            _endedOrder.Dequeue();
            if (_ended.TryGetValue(oldest.Id, out var current) && ReferenceEquals(current, oldest))
            {
                _ended.Remove(oldest.Id);
            }
        }
    }

    /// <summary>
    /// Lays a job over the nodes its server (<paramref name="server"/>) lists. A node's capacity there is that server's
    /// share of it, so the bytes held against it are those promised to that server's jobs; bandwidth is the node's own,
    /// held by every server's jobs. (Holding every server's promised bytes against one server's share refused a second
    /// job, "needs 1 more dram nodes", whenever the shares stood uneven: 38 and 26 of 64 MiB in a run that failed, a
    /// first job on the other server promised 16 MiB of the node, the second asking 16 MiB of the 26.)
    /// </summary>
    private Placement Plan(JobRequirement requirement, IReadOnlyList<NodeInfo> nodes, string server)
    {
        lock (_lock)
        {
            var bytesHere = new Dictionary<uint, double>();
            foreach (var job in _jobs.Values.Where(j => IsOn(j, server)))
            {
                foreach (var share in job.Shares)
                {
                    bytesHere[share.NodeId] = bytesHere.GetValueOrDefault(share.NodeId) + share.Bytes;
                }
            }

            var loads = nodes
                .Where(n => n.State == NodeState.Live)
                .Select(n => new NodeLoad(n.Id, n.Tier, n.Capacity, _allocated.GetValueOrDefault(n.Id).BitsPerSecond, bytesHere.GetValueOrDefault(n.Id)));
            return Sizer.Place(requirement, loads);
        }
    }

    /// <summary>Whether <paramref name="job"/> lives on the metadata server at <paramref name="address"/> (no address: the primary).</summary>
    private bool IsOn(JobRecord job, string address) =>
        string.Equals(job.MetadataAddress ?? _plane.Primary.MetadataAddress, address, StringComparison.OrdinalIgnoreCase);

    private HashSet<NodeTier> AvailableTiers(IReadOnlyList<NodeInfo> nodes)
    {
        var tiers = nodes.Where(n => n.State == NodeState.Live).Select(n => n.Tier).ToHashSet();
        if (_provisioner is not null)
        {
            tiers.UnionWith(_provisioner.Tiers);
        }

        return tiers;
    }

    /// <summary>Starts <paramref name="count"/> nodes and waits until the metadata server lists them live; returns the new node list.</summary>
    private async Task<IReadOnlyList<NodeInfo>> StartNodesAsync(PocketAdminClient admin, string jobName, JobRequirement requirement, int count, IReadOnlyList<NodeInfo> before, CancellationToken cancellationToken)
    {
        var tier = requirement.Tier;
        if (_provisioner is null || !_provisioner.Tiers.Contains(tier))
        {
            throw new ProvisioningException($"the job needs {count} more {NodeTierNames.Name(tier)} nodes, and this controller cannot start {NodeTierNames.Name(tier)} nodes");
        }

        var timeout = _options.NodeStartTimeout;
        using var deadline = new CancellationTokenSource(timeout, _time);
        using var linked = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken, deadline.Token);
        // Standby (warm-pool) nodes listed before count as new once they are activated.
        var known = before.Where(n => n.State != NodeState.Standby).Select(n => n.Id).ToHashSet();
        var registered = 0;
        ControllerLog.StartingNodes(_logger, count, NodeTierNames.Name(tier), Units.FormatBytes(requirement.NodeClass.CapacityBytes), jobName);
        var started = new List<ProvisionedNode>();
        try
        {
            var request = new NodeRequest(tier, requirement.NodeClass.CapacityBytes);

            // Warm-pool nodes first: they are running already and serve as soon as they are activated.
            while (started.Count < count && await _inventory.TryClaimPooledAsync(tier, linked.Token).ConfigureAwait(false) is { } claimed)
            {
                started.Add(claimed);
            }

            // Started together: a Kubernetes provisioner waits for each pod, and the waits overlap.
            // Awaited inside a lambda, so a provisioner that throws at once fails its task rather than the batch's setup.
            var starts = Enumerable.Range(0, count - started.Count).Select(async _ => await _provisioner.StartNodeAsync(request, linked.Token).ConfigureAwait(false)).ToList();
            try
            {
                await Task.WhenAll(starts).ConfigureAwait(false);
            }
            catch (Exception ex)
            {
                // The starts that succeeded, and the warm-pool nodes claimed, would run on unused (on Kubernetes:
                // pods nobody deletes); stop them.
                var orphans = started.Concat(starts.Where(t => t.IsCompletedSuccessfully).Select(t => t.Result)).ToList();
                var stopped = await StopQuietlyAsync(orphans).ConfigureAwait(false);
                var failure = starts.FirstOrDefault(t => t.IsFaulted)?.Exception?.InnerException ?? ex;
                if (failure is OperationCanceledException && cancellationToken.IsCancellationRequested)
                {
                    throw;
                }

                throw new ProvisioningException(
                    $"starting {count} {NodeTierNames.Name(tier)} nodes failed: {failure.Message}; stopped the {stopped} of them that had started", failure);
            }

            started.AddRange(starts.Select(t => t.Result));
            foreach (var node in started)
            {
                ControllerLog.NodeStarted(_logger, node.Handle, NodeTierNames.Name(node.Tier), node.NodeId?.ToString(CultureInfo.InvariantCulture) ?? "pending", node.Address ?? "pending");
            }

            // A started node is usable once the metadata server lists it live: nodes with a known id must appear as
            // themselves, the others as any new live node of the tier.
            var expected = started.Where(n => n.NodeId is not null).Select(n => n.NodeId!.Value).ToHashSet();
            HashSet<uint> fresh = [];
            var listed = await NodeStarts.WaitForNodesAsync(
                admin.GetNodesAsync,
                nodes =>
                {
                    fresh = nodes.Where(n => n.State == NodeState.Live && n.Tier == tier && !known.Contains(n.Id)).Select(n => n.Id).ToHashSet();
                    registered = fresh.Count;
                    return fresh.Count >= count && expected.IsSubsetOf(fresh) ? nodes : null;
                },
                _options.NodeStartPollInterval,
                _time,
                linked.Token).ConfigureAwait(false);
            HandOver(started, fresh.Except(expected).ToList());
            return listed;
        }
        catch (OperationCanceledException) when (deadline.IsCancellationRequested && !cancellationToken.IsCancellationRequested)
        {
            // The registration fails: the nodes it started or claimed serve nobody.
            var stopped = await StopQuietlyAsync(started).ConfigureAwait(false);
            throw new ProvisioningException(
                $"started {count} {NodeTierNames.Name(tier)} nodes, but {registered} registered with the metadata server within {timeout.TotalSeconds:0.#} s; stopped the {stopped} started");
        }
    }

    /// <summary>
    /// Records the nodes a registration started or claimed in the inventory once they serve, so the autoscaler may
    /// remove them when load drops. A node whose id the provisioner
    /// did not know (a pod) is only handed over when it is the one such node and one unexplained new node is listed:
    /// stopping it by a guessed id could stop a node that was never drained.
    /// </summary>
    private void HandOver(List<ProvisionedNode> started, List<uint> unexplained)
    {
        var pending = started.Where(n => n.NodeId is null).ToList();
        foreach (var node in started.Where(n => n.NodeId is not null))
        {
            _inventory.Own(node);
        }

        if (pending.Count == 1 && unexplained.Count == 1)
        {
            _inventory.Own(pending[0] with { NodeId = unexplained[0] });
        }
    }

    /// <summary>Stops nodes a failed batch started or claimed; returns how many stopped.</summary>
    private Task<int> StopQuietlyAsync(IReadOnlyList<ProvisionedNode> nodes) =>
        NodeStarts.StopQuietlyAsync(_provisioner!, nodes, _options.NodeStartTimeout, _time, _logger);

    /// <summary>
    /// Takes <paramref name="nodes"/> out of every job: out of its weight map (sent to the metadata server), its
    /// shares and the nodes' allocations. Called before a node is drained and when nodes die or leave, so no job
    /// lists a node that is gone. Jobs left with no node fall back to their tier's live nodes.
    /// </summary>
    public Task ExcludeNodesAsync(IReadOnlySet<uint> nodes, CancellationToken cancellationToken = default) =>
        ExcludeNodesAsync(nodes, wait: true, cancellationToken);

    private async Task ExcludeNodesAsync(IReadOnlySet<uint> nodes, bool wait, CancellationToken cancellationToken)
    {
        if (nodes.Count == 0)
        {
            return;
        }

        // Under the registration gate: a registration in flight must not add shares of these nodes back afterwards.
        // The telemetry's pruning does not wait for one (it may wait for nodes to start); the next tick prunes.
        if (!await _registrationGate.WaitAsync(wait ? Timeout.InfiniteTimeSpan : TimeSpan.Zero, cancellationToken).ConfigureAwait(false))
        {
            return;
        }

        try
        {
            foreach (var job in Jobs.Where(j => j.Shares.Any(s => nodes.Contains(s.NodeId)) || j.Weights.Weights.Keys.Any(nodes.Contains)))
            {
                var weights = job.Weights.Without(nodes);
                try
                {
                    await _plane.For(job.MetadataAddress).SetWeightsAsync(job.Id, weights.Weights, job.Requirement.Tier, cancellationToken).ConfigureAwait(false);
                }
                catch (ObjectNotFoundException)
                {
                    // The job is gone from the metadata server; the lease pass ends it. Its shares are still dropped below.
                }

                lock (_lock)
                {
                    if (_jobs.TryGetValue(job.Id, out var current))
                    {
                        _jobs[job.Id] = current with { Shares = [.. current.Shares.Where(s => !nodes.Contains(s.NodeId))], Weights = weights };
                    }
                }
            }

            lock (_lock)
            {
                foreach (var node in nodes)
                {
                    _allocated.Remove(node);
                }
            }
        }
        finally
        {
            _registrationGate.Release();
        }
    }

    /// <summary>
    /// A node added to <paramref name="tier"/> under pressure takes its share of the running jobs of that tier: each
    /// job's weight map gets the node (<see cref="WeightMap.With"/>) and is re-sent to the metadata server, so the
    /// jobs' new blocks land on it too, not only those of jobs registered later. Returns how many jobs took it.
    /// Jobs without a weight map already spread over the tier's live nodes.
    /// </summary>
    public async Task<int> SpreadOverNodeAsync(uint node, NodeTier tier, CancellationToken cancellationToken = default)
    {
        await _registrationGate.WaitAsync(cancellationToken).ConfigureAwait(false);
        try
        {
            var spread = 0;
            foreach (var job in Jobs.Where(j => j.Requirement.Tier == tier && j.Weights.Weights.Count > 0 && !j.Weights.Weights.ContainsKey(node)))
            {
                var weights = job.Weights.With(node);
                try
                {
                    await _plane.For(job.MetadataAddress).SetWeightsAsync(job.Id, weights.Weights, job.Requirement.Tier, cancellationToken).ConfigureAwait(false);
                }
                catch (ObjectNotFoundException)
                {
                    // The job is gone from the metadata server; the lease pass ends it.
                    continue;
                }

                lock (_lock)
                {
                    if (_jobs.TryGetValue(job.Id, out var current))
                    {
                        _jobs[job.Id] = current with { Weights = weights };
                    }
                }

                spread++;
            }

            return spread;
        }
        finally
        {
            _registrationGate.Release();
        }
    }

    /// <summary>After a telemetry sample: nodes a job still lists that are dead, drained or gone are taken out of it.</summary>
    internal Task PruneAsync(IReadOnlyList<NodeSample> samples, CancellationToken cancellationToken, Func<uint, bool>? listedBefore = null)
    {
        // The sample was taken before this tick's other subscribers ran: a node registered (or a warm-pool node
        // activated) since then is missing from it or still listed as standby, and is not gone.
        var isGone = NodeStarts.GoneIn(samples, listedBefore);
        HashSet<uint> gone;
        lock (_lock)
        {
            gone = [.. _jobs.Values.SelectMany(j => j.Shares.Select(s => s.NodeId).Concat(j.Weights.Weights.Keys)).Concat(_allocated.Keys).Where(isGone)];
        }

        return gone.Count == 0 ? Task.CompletedTask : ExcludeNodesAsync(gone, wait: false, cancellationToken);
    }

    /// <summary>
    /// What a request with the token of a job whose lease ran out is told by the metadata server, after "job ID has
    /// ended: ": when it expired, after how long, and how to avoid it next time.
    /// </summary>
    internal static string LeaseExpiredText(JobRecord? job) => job is null
        ? "its lease expired and its data was freed"
        : $"its lease expired at {job.LeaseExpiresAt.UtcDateTime.ToString("yyyy-MM-ddTHH:mm:ssZ", CultureInfo.InvariantCulture)} after {FormatLease(job.Lease)} without requests, and its data was freed; "
            + $"register again, and keep it busy or register it with a longer lease (pocket job register --lease {SuggestedLease(job.Lease)}; HTTP: \"lease\": \"{SuggestedLease(job.Lease)}\")";

    /// <summary>A lease as people say it: "5 min", "1 h", "90 s", "2 d".</summary>
    internal static string FormatLease(TimeSpan lease) => lease switch
    {
        { TotalDays: >= 1 } when lease.TotalHours % 24 == 0 => string.Create(CultureInfo.InvariantCulture, $"{lease.TotalDays:0.##} d"),
        { TotalHours: >= 1 } when lease.TotalMinutes % 60 == 0 => string.Create(CultureInfo.InvariantCulture, $"{lease.TotalHours:0.##} h"),
        { TotalMinutes: >= 1 } when lease.TotalSeconds % 60 == 0 => string.Create(CultureInfo.InvariantCulture, $"{lease.TotalMinutes:0.##} min"),
        _ => string.Create(CultureInfo.InvariantCulture, $"{lease.TotalSeconds:0.###} s"),
    };

    // The next step up that a pause of the old lease's length fits in comfortably.
    private static string SuggestedLease(TimeSpan lease) => lease < TimeSpan.FromHours(1) ? "1h" : lease < TimeSpan.FromHours(12) ? "12h" : "1d";

    internal static string ReasonText(JobEndReason reason) => reason switch
    {
        JobEndReason.Deregistered => "deregistered",
        JobEndReason.LeaseExpired => "lease expired",
        JobEndReason.Vanished => "gone from the metadata server",
        JobEndReason.Lost => "its metadata server was lost",
        _ => reason.ToString(),
    };

    /// <summary>Stops the lease clock. Jobs stay registered on the metadata server.</summary>
    public async ValueTask DisposeAsync()
    {
        await _stop.CancelAsync().ConfigureAwait(false);
        if (_leaseTimer is not null)
        {
            await _leaseTimer.DisposeAsync().ConfigureAwait(false);
        }

        // Wait for a pass in flight, so nothing uses the client after its owner disposes it.
        await _leaseGate.WaitAsync().ConfigureAwait(false);
        _leaseGate.Release();
    }
}
