using Pocket.Protocol;
using Pocket.Protocol.Messages;

namespace Pocket.Client;

public sealed partial class PocketClient
{
    /// <summary>
    /// Usage of any job by id (objects, bytes, requests served). Needs the cluster token in
    /// <see cref="PocketClientOptions.ClusterToken"/> when the cluster has one; the controller polls it to renew leases.
    /// </summary>
    /// <exception cref="ObjectNotFoundException">The metadata server has no such job.</exception>
    public async Task<JobUsage> GetJobUsageAsync(string jobId, CancellationToken cancellationToken = default)
    {
        ArgumentException.ThrowIfNullOrEmpty(jobId);
        var body = new BodyWriter();
        JobStatsRequest.Write(body, jobId);
        var reply = await SendMetadataAsync(Opcode.JobStats, FrameFlags.None, Options.ClusterToken, body.WrittenMemory, cancellationToken).ConfigureAwait(false);
        return JobUsage.Read(reply.Body);
    }

    /// <summary>
    /// Starts draining a storage node: it gets no new blocks and its live blocks are copied to other nodes while
    /// readers go on reading. Returns at once; the node's state becomes <see cref="NodeState.Drained"/> (see
    /// <see cref="GetNodesAsync"/>) when it holds nothing and may be stopped. Needs the cluster token.
    /// </summary>
    /// <exception cref="ObjectNotFoundException">No such live node.</exception>
    public async Task DrainNodeAsync(uint nodeId, CancellationToken cancellationToken = default)
    {
        var body = new BodyWriter(sizeof(uint));
        DrainNodeRequest.Write(body, nodeId);
        await SendMetadataAsync(Opcode.DrainNode, FrameFlags.None, Options.ClusterToken, body.WrittenMemory, cancellationToken).ConfigureAwait(false);
    }

    /// <summary>
    /// Activates a standby (warm-pool) storage node: placement may choose it from now on. Needs the cluster token.
    /// </summary>
    /// <exception cref="ObjectNotFoundException">No such node, or it is neither standby nor live.</exception>
    public async Task ActivateNodeAsync(uint nodeId, CancellationToken cancellationToken = default)
    {
        var body = new BodyWriter(sizeof(uint));
        ActivateNodeRequest.Write(body, nodeId);
        await SendMetadataAsync(Opcode.ActivateNode, FrameFlags.None, Options.ClusterToken, body.WrittenMemory, cancellationToken).ConfigureAwait(false);
    }
}
