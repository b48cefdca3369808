using Microsoft.Extensions.Logging;
using Pocket.Metadata.Nodes;
using Pocket.Metadata.Placement;
using Pocket.Protocol;
using Pocket.Protocol.Messages;

namespace Pocket.Metadata;

/// <summary>
/// Everything the metadata server knows: jobs, their namespaces, open writes, the inline store and the node registry,
/// behind one lock. Each operation takes decoded request values, holds the lock for microseconds (never across I/O)
/// and returns a result; the server's handlers decode, call and encode, and never see the lock. Inputs are checked
/// for form (key syntax, tiers, flags) by the handler; the state checks everything that depends on what it holds.
/// </summary>
internal sealed partial class MetadataState
{
    private readonly Lock _lock = new();
    private readonly MetadataServerOptions _options;
    private readonly ILogger _logger;
    private readonly Random _random;
    private readonly Dictionary<string, JobEntry> _jobsById = new(StringComparer.Ordinal);
    private readonly Dictionary<JobToken, JobEntry> _jobsByToken = [];
    private readonly Dictionary<ulong, OpenHandle> _handles = [];
    private readonly Dictionary<string, int> _jobCounters = new(StringComparer.Ordinal);
    private readonly List<JobEntry> _retiredJobs = [];
    private readonly JobTombstones _ended;
    private readonly long _maxObjectMemory;
    private readonly long _inlineCapacity;
    private ulong _nextHandle;
    private long _inlineBytes;
    private long _objectMemory;

    /// <summary>
    /// What one object's (or open write's) records cost beyond its key and inline bytes: its entry, its slots in the
    /// job's dictionary and key index (with their growth slack) and an inline array's header. Measured with 0-byte
    /// objects (docs/benchmarks.md, "Metadata object memory").
    /// </summary>
    internal const int ObjectOverheadBytes = 200;

    /// <summary>A recursive delete of at least this many objects trims its job's dictionary (a rehash of what is left).</summary>
    private const int TrimAfterObjects = 4096;

    /// <param name="random">The placement draw (seeded in tests); <see cref="Random.Shared"/> by default.</param>
    public MetadataState(MetadataServerOptions options, ILogger logger, Random? random = null)
    {
        _options = options;
        _logger = logger;
        _random = random ?? Random.Shared;
        _maxObjectMemory = options.EffectiveMaxObjectMemory;
        _inlineCapacity = options.EffectiveInlineCapacity;
        Inline = new InlineStore(_inlineCapacity, options.TimeProvider);
        _ended = new JobTombstones(options.TimeProvider, options.EndedJobsRemembered, options.EndedJobsRetention);
        foreach (var lost in options.LostJobs)
        {
            _ended.AddLost(lost);
            SkipJobNumber(lost.JobId);
        }
        Nodes = new NodeRegistry(options.TimeProvider, options.SuspectAfter < options.NodeTimeout ? options.SuspectAfter : options.NodeTimeout, options.NodeTimeout, logger);
    }

    /// <summary>
    /// Numbers this server's next job of the same name past <paramref name="jobId"/> ("name-N"), so a replacement never
    /// hands out the id of a job lost with the server it replaces.
    /// </summary>
    private void SkipJobNumber(string jobId)
    {
        var dash = jobId.LastIndexOf('-');
        if (dash <= 0 || !int.TryParse(jobId.AsSpan(dash + 1), System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out var number) || number <= _options.JobNumberOffset)
        {
            return;
        }

        var name = jobId[..dash];
        var used = (number - _options.JobNumberOffset + _options.JobNumberStride - 1) / _options.JobNumberStride;
        _jobCounters[name] = Math.Max(_jobCounters.GetValueOrDefault(name), used);
    }

    /// <summary>The bytes of inline objects (its own lock; trimmed and disposed by the server).</summary>
    public InlineStore Inline { get; }

    /// <summary>The node registry. Call it only through the state's operations, except <see cref="NodeRegistry.SecretOf"/>.</summary>
    public NodeRegistry Nodes { get; }

    /// <summary>The job a data request's token names (counting the request), or null.</summary>
    public JobEntry? FindJob(JobToken token)
    {
        lock (_lock)
        {
            if (_jobsByToken.TryGetValue(token, out var job))
            {
                job.Requests++;
            }

            return job;
        }
    }

    /// <summary>What a request whose token names no job is told: what happened to its job when it ended lately, else "unknown job token".</summary>
    public string UnknownTokenMessage(JobToken token) => UnknownToken(token).Message;

    /// <summary>
    /// The status and message of a request whose token names no job: <see cref="Status.JobLost"/> for a job lost with
    /// the metadata server this one replaced, else <see cref="Status.Unauthorized"/> with what happened to it.
    /// </summary>
    public (Status Status, string Message) UnknownToken(JobToken token)
    {
        lock (_lock)
        {
            return _ended.UnknownToken(token);
        }
    }

    /// <summary>True when the token belongs to a job (live, or ended with keep-after-job objects).</summary>
    public bool IsJobToken(JobToken token)
    {
        lock (_lock)
        {
            return _jobsByToken.ContainsKey(token);
        }
    }

    // ---- Jobs ----

    /// <summary>A new job "name-N" with the given token (a new random one when none) on a tier, with its node weights (none: every node of the tier alike).</summary>
    /// <summary>The job's <paramref name="quota"/> (null: <see cref="MetadataServerOptions.DefaultJobQuota"/>) limits what it may hold.</summary>
    public Result<JobEntry> RegisterJob(string name, JobToken token, NodeTier tier, IReadOnlyDictionary<uint, double>? weights = null, JobQuota? quota = null)
    {
        if (token.IsNone)
        {
            token = JobToken.NewRandom();
        }

        lock (_lock)
        {
            if (_jobsByToken.ContainsKey(token))
            {
                return Outcome.Fail(Status.Exists, "that token already belongs to a job");
            }

            var n = _jobCounters[name] = _jobCounters.GetValueOrDefault(name) + 1;
            var number = ((n - 1) * _options.JobNumberStride) + _options.JobNumberOffset + 1;
            var job = new JobEntry
            {
                Id = $"{name}-{number}",
                Token = token,
                Tier = tier,
                Weights = weights is null ? [] : new Dictionary<uint, double>(weights),
                Quota = quota ?? _options.DefaultJobQuota,
            };
            _jobsById[job.Id] = job;
            _jobsByToken[token] = job;
            return job;
        }
    }

    /// <summary>
    /// Frees every byte of the job at once. Keep-after-job objects outlive it, read-only under its token, until their
    /// own time to live (<see cref="ExpireRetiredJobs"/>).
    /// </summary>
    /// <param name="why">Why it ended, for requests that still carry its token (<see cref="JobTombstones.Add"/>); null: deregistered.</param>
    public Result<JobRemoval> DeregisterJob(string id, string? why = null)
    {
        lock (_lock)
        {
            if (!_jobsById.Remove(id, out var job))
            {
                return Outcome.Fail(Status.NotFound, $"no job '{id}'");
            }

            var memory = job.MemoryBytes;

            foreach (var handle in _handles.Values.Where(h => h.Job == job).ToList())
            {
                ReleaseHandle(handle);
            }

            long objects = 0;
            long bytes = 0;
            foreach (var entry in job.Objects.Values.Where(e => (e.Flags & FrameFlags.KeepAfterJob) == 0).ToList())
            {
                objects++;
                bytes += entry.Size;
                RemoveObject(job, entry.Key);
                FreeObject(job, entry);
            }

            job.EndedWhy = why;
            if (job.Objects.Count == 0)
            {
                _jobsByToken.Remove(job.Token);
                _ended.Add(job.Token, job.Id, why);
                TrimAfterRemoval();
                return new JobRemoval(objects, bytes, Retired: false) { Memory = memory - job.MemoryBytes };
            }

            // The few keep-after-job objects left should not pin the capacity the job's many objects grew.
            job.Objects.TrimExcess();
            job.Reserved.TrimExcess();
            TrimAfterRemoval();

            var time = _options.TimeProvider;
            job.RetiredUntil = time.GetTimestamp() + (long)(_options.KeepAfterJobTtl.TotalSeconds * time.TimestampFrequency);
            _retiredJobs.Add(job);
            return new JobRemoval(objects, bytes, Retired: true) { Memory = memory - job.MemoryBytes };
        }
    }

    /// <summary>Frees the keep-after-job objects of ended jobs whose time to live ran out; returns those jobs and their object counts.</summary>
    public List<(string Id, long Objects, long Memory)> ExpireRetiredJobs()
    {
        var expired = new List<(string Id, long Objects, long Memory)>();
        lock (_lock)
        {
            var now = _options.TimeProvider.GetTimestamp();
            foreach (var job in _retiredJobs.Where(j => j.RetiredUntil <= now).ToList())
            {
                _retiredJobs.Remove(job);
                _jobsByToken.Remove(job.Token);
                _ended.Add(job.Token, job.Id, job.EndedWhy);
                expired.Add((job.Id, job.Objects.Count, job.MemoryBytes));
                foreach (var entry in job.Objects.Values.ToList())
                {
                    RemoveObject(job, entry.Key);
                    FreeObject(job, entry);
                }
            }
        }

        return expired;
    }

    /// <summary>Sets a job's weights (empty: every node of its tier alike) and, when given, its tier.</summary>
    public Outcome SetWeights(string id, IReadOnlyDictionary<uint, double> weights, NodeTier? tier)
    {
        lock (_lock)
        {
            if (!_jobsById.TryGetValue(id, out var job))
            {
                return Outcome.Fail(Status.NotFound, $"no job '{id}'");
            }

            job.Weights = new Dictionary<uint, double>(weights);
            if (tier is { } chosen)
            {
                job.Tier = chosen;
            }

            return Outcome.Ok;
        }
    }

    /// <summary>
    /// A job's usage: by id for the cluster (<paramref name="admin"/>) or for the job's own token, or the token's job
    /// when <paramref name="id"/> is empty.
    /// </summary>
    public Result<JobStatsReply> JobStats(string id, JobToken token, bool admin)
    {
        lock (_lock)
        {
            JobEntry? job;
            if (id.Length == 0)
            {
                _jobsByToken.TryGetValue(token, out job);
            }
            else if (admin)
            {
                _jobsById.TryGetValue(id, out job);
            }
            else
            {
                _jobsByToken.TryGetValue(token, out job);
                job = job?.Id == id ? job : null;
            }

            if (job is null)
            {
                // Asking about "my job" with a token that names none is the same failure as any data request.
                var (status, message) = _ended.UnknownToken(token);
                return id.Length == 0
                    ? Outcome.Fail(status, message)
                    : Outcome.Fail(Status.NotFound, "no such job (or not yours)");
            }

            return new JobStatsReply(job.Id, job.Objects.Count, job.StoredBytes, job.InlineBytes, job.Requests)
            {
                Tier = job.Tier,
                TierBytes = [.. job.TierBytes],
                KeyBytes = job.KeyBytes,
                Quota = job.Quota,
            };
        }
    }

    // ---- Nodes ----

    public Result<NodeEntry> RegisterNode(RegisterNodeRequest request, long connectionId)
    {
        lock (_lock)
        {
            return Nodes.Register(request, connectionId);
        }
    }

    /// <summary>The node gives up to <paramref name="count"/> free segments of its share back (to move them to another server).</summary>
    public Result<ulong> ReleaseShare(uint nodeId, int count, long connectionId)
    {
        lock (_lock)
        {
            return Nodes.ReleaseShare(nodeId, count, connectionId);
        }
    }

    /// <summary>The node adds segments to its share here.</summary>
    public Outcome AddShare(uint nodeId, ulong mask, long connectionId)
    {
        lock (_lock)
        {
            return Nodes.AddShare(nodeId, mask, connectionId);
        }
    }

    public Outcome ActivateNode(uint id)
    {
        lock (_lock)
        {
            return Nodes.Activate(id);
        }
    }

    /// <summary>Every node's record, for the cluster's own parts and for jobs (a token that names no job gets nothing).</summary>
    public Result<NodeRecord[]> ListNodes(JobToken token, bool admin)
    {
        lock (_lock)
        {
            // Node addresses and load are for the cluster's own parts and its jobs, not for anyone who can connect.
            if (!admin && !_jobsByToken.ContainsKey(token))
            {
                var (status, message) = _ended.UnknownToken(token);
                return status == Status.JobLost
                    ? Outcome.Fail(status, message)
                    : Outcome.Fail(Status.Unauthorized, "listing nodes needs a job token or the cluster token");
            }

            return Nodes.Records();
        }
    }

    /// <summary>Nodes silent for too long are declared dead (or forgotten, once drained).</summary>
    public List<NodeDeath> CheckLiveness()
    {
        var died = new List<NodeDeath>();
        lock (_lock)
        {
            Nodes.CheckLiveness(died);
        }

        return died;
    }

    /// <summary>A client or node connection closed: its open handles are released and the nodes it registered have stopped.</summary>
    public List<NodeDeath> ConnectionClosed(long connectionId)
    {
        var died = new List<NodeDeath>();
        lock (_lock)
        {
            foreach (var handle in _handles.Values.Where(h => h.ConnectionId == connectionId).ToList())
            {
                ReleaseHandle(handle);
            }

            Nodes.ConnectionClosed(connectionId, died);
        }

        return died;
    }

    /// <summary>True when the connection holds open handles (a large put or get between its steps).</summary>
    public bool HoldsHandles(long connectionId)
    {
        lock (_lock)
        {
            return _handles.Values.Any(h => h.ConnectionId == connectionId);
        }
    }

    /// <summary>
    /// The objects this server still holds (of live jobs, and the keep-after-job objects of ended ones until they
    /// expire) and its inline bytes: what a drained server must be rid of before it is stopped. One pass over the jobs.
    /// </summary>
    public (long Objects, long InlineBytes) Held()
    {
        lock (_lock)
        {
            long objects = 0;
            foreach (var job in _jobsById.Values.Concat(_retiredJobs))
            {
                objects += job.Objects.Count;
            }

            return (objects, _inlineBytes);
        }
    }

    /// <summary>Counts of jobs, objects, handles and inline bytes and every node's capacity and use, taken at one moment.</summary>
    public MetadataSnapshot Snapshot(int connections)
    {
        lock (_lock)
        {
            long objects = 0;
            foreach (var job in _jobsById.Values)
            {
                objects += job.Objects.Count;
            }

            var nodes = new List<MetadataNodeSnapshot>(Nodes.Count);
            foreach (var node in Nodes.All)
            {
                nodes.Add(new MetadataNodeSnapshot(node.Id, node.Tier, node.ReportedState, node.Capacity, node.State == NodeState.Dead ? 0 : node.UsedBytes, node.MovedBytes));
            }

            return new MetadataSnapshot(_jobsById.Count, objects, _inlineBytes, _inlineCapacity, _handles.Count, connections, nodes)
            {
                ObjectMemory = _objectMemory,
                MaxObjectMemory = _maxObjectMemory,
                InlineSlotBytes = Inline.SlotBytesInUse,
                InlineFreeResidentBytes = Inline.FreeResidentBytes,
                InlineReleasedBytes = Inline.ReleasedBytes,
            };
        }
    }

    // ---- Shared by the operations (the caller holds the lock) ----

    /// <summary>Places <paramref name="bytes"/> for a job over the live nodes (<see cref="ExtentAllocator.Allocate"/>); all or nothing.</summary>
    private Status Allocate(JobEntry job, long bytes, List<Extent> into, out string error) =>
        ExtentAllocator.Allocate(job, Nodes.Live(), bytes, _options.StripeUnit, _options.HddExtent, _random, into, out error);

    private static Outcome RetiredFailure(JobEntry job) =>
        Outcome.Fail(Status.Unauthorized, $"job '{job.Id}' has ended; its keep-after-job objects are read-only until they expire");

    private void AddObject(JobEntry job, ObjectEntry entry)
    {
        job.Objects[entry.Key] = entry;
        job.Keys.Set(entry);
        Charge(job, entry.Key, entry.Inline?.Length ?? 0, +1);
        foreach (var extent in entry.Extents)
        {
            job.TierBytes[(int)extent.Tier] += extent.Length;
        }
    }

    private void RemoveObject(JobEntry job, string key)
    {
        if (job.Objects.Remove(key, out var entry))
        {
            Charge(job, entry.Key, entry.Inline?.Length ?? 0, -1);
            foreach (var extent in entry.Extents)
            {
                job.TierBytes[(int)extent.Tier] -= extent.Length;
            }
        }

        job.Keys.Remove(key);
    }

    private void FreeObject(JobEntry job, ObjectEntry entry)
    {
        if (entry.Inline is not null)
        {
            job.InlineBytes -= entry.Inline.Length;
            _inlineBytes -= entry.Inline.Length;
            entry.Inline.Release();
        }
        else
        {
            job.StoredBytes -= entry.Size;
            Nodes.FreeExtents(entry.Extents);
        }
    }

    private void ReleaseHandle(OpenHandle handle)
    {
        if (!_handles.Remove(handle.Id))
        {
            return;
        }

        if (handle.IsWrite)
        {
            Unreserve(handle);
        }

        Nodes.FreeExtents(handle.Extents);
        handle.Extents.Clear();
    }

    // ---- Quotas and object memory (the caller holds the lock) ----

    /// <summary>What an object or open write costs this server's memory: its key as .NET holds it, its records and its inline bytes.</summary>
    internal static long ObjectMemoryOf(string key, int inlineBytes) => ObjectOverheadBytes + (2L * key.Length) + inlineBytes;

    /// <summary>
    /// Null when the job may add <paramref name="bytes"/> more data and, with <paramref name="newKey"/>, one more object
    /// under that key (its records, without inline bytes: <see cref="CheckInlineRoom"/> asks for those); otherwise the
    /// QuotaExceeded failure naming the first quota (or the server's bound) it would pass, its limit and the use. The
    /// same for an object put inline and one written through storage nodes.
    /// </summary>
    private Outcome? CheckQuota(JobEntry job, string? newKey, long bytes)
    {
        var quota = job.Quota;
        if (quota.MaxBytes > 0 && bytes > quota.MaxBytes - job.UsedBytes)
        {
            return Exceeded(job, "bytes", quota.MaxBytes, job.UsedBytes, bytes);
        }

        if (newKey is null)
        {
            return null;
        }

        if (quota.MaxObjects > 0 && job.ObjectCount >= quota.MaxObjects)
        {
            return Exceeded(job, "objects", quota.MaxObjects, job.ObjectCount, 1);
        }

        if (quota.MaxKeyBytes > 0)
        {
            var keyBytes = System.Text.Encoding.UTF8.GetByteCount(newKey);
            if (keyBytes > quota.MaxKeyBytes - job.KeyBytes)
            {
                return Exceeded(job, "key bytes", quota.MaxKeyBytes, job.KeyBytes, keyBytes);
            }
        }

        var memory = ObjectMemoryOf(newKey, 0);
        if (memory > _maxObjectMemory - _objectMemory)
        {
            return Outcome.Fail(
                Status.QuotaExceeded,
                $"quota exceeded: the metadata server's object memory bound ({_maxObjectMemory} bytes, {_objectMemory} in use over all jobs, "
                + $"this object {memory}); delete objects or end jobs, or raise --max-object-memory");
        }

        return null;
    }

    /// <summary>
    /// Null when this server can hold <paramref name="inlineBytes"/> more inline, for an object under
    /// <paramref name="key"/> that passed <see cref="CheckQuota"/>; otherwise CapacityExceeded: the inline store is full,
    /// or the bytes would pass the object memory bound, while the same object through storage nodes fits, so the
    /// client writes it there.
    /// </summary>
    private Outcome? CheckInlineRoom(string key, int inlineBytes)
    {
        if (inlineBytes > _inlineCapacity - _inlineBytes)
        {
            return Outcome.Fail(
                Status.CapacityExceeded,
                $"capacity exceeded: the metadata server's inline store is full ({_inlineCapacity} bytes, {_inlineBytes} in use); write through storage nodes");
        }

        var memory = ObjectMemoryOf(key, inlineBytes);
        if (memory > _maxObjectMemory - _objectMemory)
        {
            return Outcome.Fail(
                Status.CapacityExceeded,
                $"capacity exceeded: the metadata server's object memory bound ({_maxObjectMemory} bytes, {_objectMemory} in use over all jobs) "
                + $"has no room for this object's {inlineBytes} inline bytes; write through storage nodes");
        }

        return null;
    }

    /// <summary>CapacityExceeded for a put the inline store has no slot of its size for (its address space is taken by slots of other sizes).</summary>
    private Outcome NoSlot(int inlineBytes) => Outcome.Fail(
        Status.CapacityExceeded,
        $"capacity exceeded: the metadata server's inline store has no free slot for {inlineBytes} bytes ({_inlineBytes} of {_inlineCapacity} in use); write through storage nodes");

    private static Outcome Exceeded(JobEntry job, string quota, long limit, long used, long wanted) => Outcome.Fail(
        Status.QuotaExceeded,
        $"quota exceeded: job '{job.Id}' may hold {limit} {quota} and holds {used}; this request needs {wanted} more");

    /// <summary>Counts (<paramref name="sign"/> +1) or uncounts (-1) an object or reserved key in its job's key bytes and the object memory.</summary>
    private void Charge(JobEntry job, string key, int inlineBytes, int sign)
    {
        var memory = ObjectMemoryOf(key, inlineBytes) * sign;
        job.KeyBytes += System.Text.Encoding.UTF8.GetByteCount(key) * sign;
        job.MemoryBytes += memory;
        _objectMemory += memory;
    }

    /// <summary>Reserves a key for an open write: counted as an object from now on.</summary>
    private void Reserve(OpenHandle handle)
    {
        handle.Job.Reserved.Add(handle.Key);
        Charge(handle.Job, handle.Key, 0, +1);
    }

    /// <summary>Ends an open write's reservation and its pending allocation (at commit, abort or release).</summary>
    private void Unreserve(OpenHandle handle)
    {
        if (handle.Job.Reserved.Remove(handle.Key))
        {
            Charge(handle.Job, handle.Key, 0, -1);
        }

        handle.Job.PendingBytes -= handle.Allocated;
        handle.Allocated = 0;
    }

    /// <summary>After a job's objects went away: tables that only grow give back their capacity once they are empty.</summary>
    private void TrimAfterRemoval()
    {
        if (_handles.Count == 0)
        {
            _handles.TrimExcess();
        }
    }
}
