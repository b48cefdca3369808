using Pocket.Client;
using Pocket.Protocol;
using Pocket.Protocol.Messages;

namespace Pocket.Admin;

/// <summary>
/// Cluster administration on the metadata server, with the cluster token (an admin credential: the data client never
/// holds it; data requests carry their job's token): registering jobs without the controller's sizing, setting their weights, listing,
/// draining and activating storage nodes, reading any job's usage. The controller drives the cluster through it; data
/// goes through <see cref="PocketClient"/> and <see cref="PocketJob"/>. It shares its client's connection and is as
/// thread-safe as the client; it owns nothing, so the client's owner disposes the client.
/// </summary>
public sealed class PocketAdminClient
{
    /// <summary>Administration through <paramref name="client"/>'s connection to the metadata server, with <paramref name="clusterToken"/>.</summary>
    public PocketAdminClient(PocketClient client, JobToken clusterToken)
    {
        ArgumentNullException.ThrowIfNull(client);
        Client = client;
        ClusterToken = clusterToken;
    }

    /// <summary>The data client this administers through.</summary>
    public PocketClient Client { get; }

    /// <summary>The metadata server, as host:port.</summary>
    public string MetadataAddress => Client.MetadataAddress;

    private JobToken ClusterToken { get; }

    /// <summary>Registers a job directly with the metadata server (no sizing, DRAM first) and returns its handle.</summary>
    /// <exception cref="PocketException">A bad name (<see cref="JobName.Rule"/>), or Unauthorized without the cluster token.</exception>
    public Task<PocketJob> RegisterJobAsync(string name, CancellationToken cancellationToken = default) =>
        RegisterJobAsync(name, NodeTier.Dram, cancellationToken);

    /// <summary>Registers a job whose blocks go to <paramref name="tier"/> first (and spill to slower tiers when it is full).</summary>
    /// <exception cref="PocketException">A bad name (<see cref="JobName.Rule"/>), or Unauthorized without the cluster token.</exception>
    public Task<PocketJob> RegisterJobAsync(string name, NodeTier tier, CancellationToken cancellationToken = default) =>
        RegisterJobAsync(name, tier, null, cancellationToken);

    /// <summary>
    /// Registers a job on <paramref name="tier"/> with the share of its new blocks each node takes (the controller's weight
    /// map; null or empty: every node of the tier alike), in one round trip: the job never exists without its weights.
    /// </summary>
    /// <exception cref="PocketException">A bad name (<see cref="JobName.Rule"/>), or Unauthorized without the cluster token.</exception>
    public Task<PocketJob> RegisterJobAsync(string name, NodeTier tier, IReadOnlyDictionary<uint, double>? weights, CancellationToken cancellationToken = default) =>
        RegisterJobAsync(name, tier, weights, null, cancellationToken);

    /// <summary>
    /// Registers a job on <paramref name="tier"/> with its weight map and its <paramref name="quota"/> (null: the metadata
    /// server's default quota), in one round trip. Past a limit of the quota, the job's requests fail with
    /// <see cref="QuotaExceededException"/> and change nothing.
    /// </summary>
    /// <exception cref="PocketException">A bad name (<see cref="JobName.Rule"/>), a negative limit, or Unauthorized without the cluster token.</exception>
    public async Task<PocketJob> RegisterJobAsync(string name, NodeTier tier, IReadOnlyDictionary<uint, double>? weights, JobQuota? quota, CancellationToken cancellationToken = default)
    {
        var body = new BodyWriter();
        RegisterJobRequest.Write(body, new RegisterJobRequest(name, JobToken.None, tier) { Weights = weights, Quota = quota });
        var reply = await Client.SendMetadataAsync(Opcode.RegisterJob, FrameFlags.None, ClusterToken, body.WrittenMemory, cancellationToken).ConfigureAwait(false);
        return RegisterJobReply.TryRead(reply.Body, out var registered)
            ? Client.OpenJob(registered.JobId, registered.Token)
            : throw new PocketException(Status.BadRequest, "malformed register-job reply from the metadata server");
    }

    /// <summary>Deregisters a job: every byte it stored is freed at once. Returns the objects and bytes freed.</summary>
    /// <exception cref="ObjectNotFoundException">No such job.</exception>
    public Task<(long Objects, long Bytes)> DeregisterJobAsync(string jobId, CancellationToken cancellationToken = default) =>
        DeregisterJobAsync(jobId, null, cancellationToken);

    /// <summary>
    /// Deregisters a job, saying why: a later request with the job's token fails with "job ID has ended: REASON"
    /// (e.g. "its lease expired at ..."). Null: "it was deregistered at ...".
    /// </summary>
    /// <exception cref="ObjectNotFoundException">No such job.</exception>
    public async Task<(long Objects, long Bytes)> DeregisterJobAsync(string jobId, string? reason, CancellationToken cancellationToken = default)
    {
        var body = new BodyWriter();
        DeregisterJobRequest.Write(body, jobId, reason);
        var reply = await Client.SendMetadataAsync(Opcode.DeregisterJob, FrameFlags.None, ClusterToken, body.WrittenMemory, cancellationToken).ConfigureAwait(false);
        return DeregisterJobReply.TryRead(reply.Body, out var freed)
            ? (freed.Objects, freed.Bytes)
            : throw new PocketException(Status.BadRequest, "malformed deregister-job reply from the metadata server");
    }

    /// <summary>Sets the share of a job's new blocks each node receives (the controller's weight map).</summary>
    public Task SetWeightsAsync(string jobId, IReadOnlyDictionary<uint, double> weights, CancellationToken cancellationToken = default) =>
        SetWeightsAsync(jobId, weights, null, cancellationToken);

    /// <summary>Sets a job's weight map and, when given, its tier (where blocks go when the weighted nodes are full).</summary>
    public async Task SetWeightsAsync(string jobId, IReadOnlyDictionary<uint, double> weights, NodeTier? tier, CancellationToken cancellationToken = default)
    {
        var body = new BodyWriter();
        SetWeightsRequest.Write(body, jobId, weights, tier);
        await Client.SendMetadataAsync(Opcode.SetWeights, FrameFlags.None, ClusterToken, body.WrittenMemory, cancellationToken).ConfigureAwait(false);
    }

    /// <summary>
    /// Every storage node the metadata server knows, live or not (a job's own token lists them too, through
    /// <see cref="PocketJob.GetNodesAsync"/>).
    /// </summary>
    /// <exception cref="PocketUnauthorizedException">The cluster has a token and the client does not hold it.</exception>
    public Task<IReadOnlyList<NodeInfo>> GetNodesAsync(CancellationToken cancellationToken = default) =>
        Client.ListNodesAsync(ClusterToken, cancellationToken);

    /// <summary>
    /// The metadata server's load as counters since it started: the CPU time of its process, its uptime (the monotonic
    /// clock the CPU time is measured against), the job requests it has handled and the processors it may use. Two
    /// readings give its CPU per second (as a fraction of one core: CPU seconds over uptime seconds) and its request
    /// rate; the controller scales the metadata plane on them.
    /// </summary>
    /// <exception cref="PocketUnauthorizedException">The cluster has a token and the client does not hold it.</exception>
    /// <exception cref="PocketException">An older server that does not report its load (UnknownOpcode).</exception>
    public async Task<ServerLoad> GetServerLoadAsync(CancellationToken cancellationToken = default)
    {
        var reply = await Client.SendMetadataAsync(Opcode.ServerLoad, FrameFlags.None, ClusterToken, ReadOnlyMemory<byte>.Empty, cancellationToken).ConfigureAwait(false);
        return ServerLoadReply.TryRead(reply.Body, out var load)
            ? load
            : throw new PocketException(Status.BadRequest, $"metadata server {MetadataAddress} sent a malformed ServerLoad reply");
    }

    /// <summary>Usage of any job by id (objects, bytes, requests served); the controller polls it to renew leases.</summary>
    /// <exception cref="ObjectNotFoundException">The metadata server has no such job.</exception>
    public async Task<JobUsage> GetJobUsageAsync(string jobId, CancellationToken cancellationToken = default)
    {
        ArgumentException.ThrowIfNullOrEmpty(jobId);
        var body = new BodyWriter();
        JobStatsRequest.Write(body, jobId);
        var reply = await Client.SendMetadataAsync(Opcode.JobStats, FrameFlags.None, ClusterToken, body.WrittenMemory, cancellationToken).ConfigureAwait(false);
        return JobUsage.Read(reply.Body);
    }

    /// <summary>
    /// Starts draining a storage node: it gets no new blocks and its live blocks are copied to other nodes while
    /// readers go on reading. Returns at once; the node's state becomes <see cref="NodeState.Drained"/> (see
    /// <see cref="GetNodesAsync"/>) when it holds nothing and may be stopped.
    /// </summary>
    /// <exception cref="ObjectNotFoundException">No such live node.</exception>
    public async Task DrainNodeAsync(uint nodeId, CancellationToken cancellationToken = default)
    {
        var body = new BodyWriter(sizeof(uint));
        DrainNodeRequest.Write(body, nodeId);
        await Client.SendMetadataAsync(Opcode.DrainNode, FrameFlags.None, ClusterToken, body.WrittenMemory, cancellationToken).ConfigureAwait(false);
    }

    /// <summary>Activates a standby (warm-pool) storage node: placement may choose it from now on.</summary>
    /// <exception cref="ObjectNotFoundException">No such node, or it is neither standby nor live.</exception>
    public async Task ActivateNodeAsync(uint nodeId, CancellationToken cancellationToken = default)
    {
        var body = new BodyWriter(sizeof(uint));
        ActivateNodeRequest.Write(body, nodeId);
        await Client.SendMetadataAsync(Opcode.ActivateNode, FrameFlags.None, ClusterToken, body.WrittenMemory, cancellationToken).ConfigureAwait(false);
    }
}

/// <summary>Cluster administration through a client's connection: <c>client.Admin(clusterToken).DrainNodeAsync(id)</c>.</summary>
public static class PocketAdminExtensions
{
    /// <summary>An admin client over <paramref name="client"/>'s connection, with <paramref name="clusterToken"/> (cheap: it holds only the two).</summary>
    public static PocketAdminClient Admin(this PocketClient client, JobToken clusterToken) => new(client, clusterToken);
}
