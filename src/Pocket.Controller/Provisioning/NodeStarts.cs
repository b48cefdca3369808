using Microsoft.Extensions.Logging;
using Pocket.Client;
using Pocket.Controller.Scaling;
using Pocket.Protocol;

namespace Pocket.Controller.Provisioning;

/// <summary>
/// What the job registry and the warm pool both do around a provisioner: wait for started nodes to register with the
/// metadata server, and stop nodes that serve nobody (a failed batch, a claim cut off, a pool shutting down).
/// </summary>
internal static class NodeStarts
{
    /// <summary>
    /// Reads a node list (<paramref name="list"/>: one metadata server's, or the plane's) every
    /// <paramref name="interval"/> until <paramref name="found"/> picks a result from it; the caller's token (with its
    /// deadline) ends the wait.
    /// </summary>
    public static async Task<T> WaitForNodesAsync<T>(Func<CancellationToken, Task<IReadOnlyList<NodeInfo>>> list, Func<IReadOnlyList<NodeInfo>, T?> found, TimeSpan interval, TimeProvider time, CancellationToken cancellationToken)
        where T : class
    {
        while (true)
        {
            if (found(await list(cancellationToken).ConfigureAwait(false)) is { } result)
            {
                return result;
            }

            await Task.Delay(interval, time, cancellationToken).ConfigureAwait(false);
        }
    }

    /// <summary>
    /// Which nodes a telemetry sample shows gone: listed dead or drained, or missing from it. A sample may be older than
    /// a node registered (or activated) since. A node id a metadata server assigned only grows, so such a node is gone
    /// when it is older than the newest server-assigned id the sample lists. A node serving several metadata servers
    /// proposes a random id (upper half of the range), which says nothing about its age: it is gone when
    /// <paramref name="listedBefore"/> says an earlier sample listed it (null: never).
    /// </summary>
    public static Func<uint, bool> GoneIn(IReadOnlyList<NodeSample> samples, Func<uint, bool>? listedBefore = null)
    {
        var listed = samples.ToDictionary(s => s.NodeId, s => s.State);
        var newest = samples.Where(s => s.NodeId < SharedNodeIds).Select(s => s.NodeId).DefaultIfEmpty(0u).Max();
        return id => listed.TryGetValue(id, out var state)
            ? state is NodeState.Dead or NodeState.Drained
            : id < SharedNodeIds ? id <= newest : listedBefore?.Invoke(id) == true;
    }

    /// <summary>The first id of the range nodes serving several metadata servers propose (servers never assign it).</summary>
    public const uint SharedNodeIds = 0x8000_0000u;

    /// <summary>
    /// Stops <paramref name="nodes"/>, each within <paramref name="timeout"/>; returns how many stopped. Failures are
    /// logged, not thrown: the caller's own failure (or shutdown) is the news.
    /// </summary>
    public static async Task<int> StopQuietlyAsync(IStorageProvisioner provisioner, IEnumerable<ProvisionedNode> nodes, TimeSpan timeout, TimeProvider time, ILogger logger)
    {
        var stopped = 0;
        foreach (var node in nodes)
        {
            try
            {
                using var deadline = new CancellationTokenSource(timeout, time);
                await provisioner.StopNodeAsync(node, deadline.Token).ConfigureAwait(false);
                stopped++;
            }
            catch (Exception ex) when (ex is not OutOfMemoryException)
            {
                ControllerLog.OrphanStopFailed(logger, node.Handle, ex.Message);
            }
        }

        return stopped;
    }
}
