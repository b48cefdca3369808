using Microsoft.Extensions.Logging;
using Pocket.Admin;
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
    /// Reads the metadata server's node list every <paramref name="interval"/> until <paramref name="found"/> picks a
    /// result from it; the caller's token (with its deadline) ends the wait.
    /// </summary>
    public static async Task<T> WaitForNodesAsync<T>(PocketAdminClient admin, Func<IReadOnlyList<NodeInfo>, T?> found, TimeSpan interval, TimeProvider time, CancellationToken cancellationToken)
        where T : class
    {
        while (true)
        {
            if (found(await admin.GetNodesAsync(cancellationToken).ConfigureAwait(false)) is { } result)
            {
                return result;
            }

            await Task.Delay(interval, time, cancellationToken).ConfigureAwait(false);
        }
    }

    /// <summary>
    /// Which nodes a telemetry sample shows gone: listed dead or drained, or missing from it. A sample may be older than
    /// a node registered (or activated) since, and node ids only grow, so a missing node is gone only when it is older
    /// than the newest node the sample lists.
    /// </summary>
    public static Func<uint, bool> GoneIn(IReadOnlyList<NodeSample> samples)
    {
        var listed = samples.ToDictionary(s => s.NodeId, s => s.State);
        var newest = samples.Count == 0 ? 0 : samples.Max(s => s.NodeId);
        return id => listed.TryGetValue(id, out var state) ? state is NodeState.Dead or NodeState.Drained : id <= newest;
    }

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
