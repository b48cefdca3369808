using Pocket.Admin;
using Pocket.Client;
using Pocket.Protocol;

namespace Pocket.Controller.Jobs;

/// <summary>What the controller reads of one metadata server's load when it places a job.</summary>
/// <param name="Jobs">The controller's live jobs on it.</param>
/// <param name="Requests">Requests those jobs made, as of the last lease check.</param>
internal readonly record struct MetadataLoad(int Jobs, long Requests);

/// <summary>One read of every metadata server's node list, merged per node (<see cref="MetadataPlane.Merge"/>).</summary>
/// <param name="Nodes">Each node once, as the plane sees it.</param>
/// <param name="Failures">The servers that did not answer, with why (empty when all did).</param>
internal sealed record PlaneNodes(IReadOnlyList<NodeInfo> Nodes, IReadOnlyList<(string Address, string Error)> Failures);

/// <summary>
/// The metadata servers the controller places jobs on (docs/architecture.md, "Several metadata servers"). Every
/// storage node serves all of them under one node id, each server holding a share of its capacity, so the cluster's
/// view of a node is the merge of every server's (<see cref="GetNodesAsync"/>), and a drain or an activation goes to
/// every server that lists the node. With one server every call is that server's, unchanged.
/// </summary>
internal sealed class MetadataPlane(IReadOnlyList<PocketAdminClient> servers)
{
    public IReadOnlyList<PocketAdminClient> Servers { get; } = servers.Count > 0 ? servers : throw new ArgumentException("a metadata plane needs a server");

    public PocketAdminClient Primary => Servers[0];

    private readonly HashSet<string> _down = new(StringComparer.OrdinalIgnoreCase);

    /// <summary>False while <paramref name="server"/> is lost and not yet replaced: no job is placed on it.</summary>
    public bool IsUp(PocketAdminClient server)
    {
        lock (_down)
        {
            return !_down.Contains(server.MetadataAddress);
        }
    }

    /// <summary>Marks the server at <paramref name="address"/> lost (<paramref name="up"/> false) or serving again.</summary>
    public void SetUp(string address, bool up)
    {
        lock (_down)
        {
            if (up)
            {
                _down.Remove(address);
            }
            else
            {
                _down.Add(address);
            }
        }
    }

    /// <summary>The server at <paramref name="address"/> (a job's); the primary for null (a job registered before the plane had several).</summary>
    public PocketAdminClient For(string? address)
    {
        foreach (var server in Servers)
        {
            if (server.MetadataAddress == address)
            {
                return server;
            }
        }

        return Primary;
    }

    /// <summary>
    /// The server a new job goes to: the one with the fewest live jobs, then the fewest requests from them, then the
    /// first. CPU is not read: metadata servers do not report theirs yet.
    /// </summary>
    public static int Choose(IReadOnlyList<MetadataLoad> load)
    {
        var best = 0;
        for (var i = 1; i < load.Count; i++)
        {
            if (load[i].Jobs < load[best].Jobs || (load[i].Jobs == load[best].Jobs && load[i].Requests < load[best].Requests))
            {
                best = i;
            }
        }

        return best;
    }

    /// <summary>Every node once, merged over the servers that answered; throws only when none did.</summary>
    public async Task<IReadOnlyList<NodeInfo>> GetNodesAsync(CancellationToken cancellationToken) =>
        (await ReadNodesAsync(cancellationToken).ConfigureAwait(false)).Nodes;

    /// <summary>
    /// Reads every server's node list at once and merges them. A server that fails is left out and named in
    /// <see cref="PlaneNodes.Failures"/> (a dead server's segments go to the others, which then list them); when every
    /// server fails, the first failure is thrown. One server: its list as it is, its failure thrown.
    /// </summary>
    public async Task<PlaneNodes> ReadNodesAsync(CancellationToken cancellationToken)
    {
        if (Servers.Count == 1)
        {
            return new PlaneNodes(await Primary.GetNodesAsync(cancellationToken).ConfigureAwait(false), []);
        }

        var reads = Servers.Select(s => s.GetNodesAsync(cancellationToken)).ToArray();
        try
        {
            await Task.WhenAll(reads).ConfigureAwait(false);
        }
        catch (Exception) when (reads.Any(r => r.IsCompletedSuccessfully))
        {
            // Some answered: the failures are reported with the merge below.
        }

        cancellationToken.ThrowIfCancellationRequested();
        var answered = reads.Where(r => r.IsCompletedSuccessfully).Select(r => r.Result).ToList();
        var failures = reads
            .Select((r, i) => (Read: r, Server: Servers[i]))
            .Where(x => !x.Read.IsCompletedSuccessfully)
            .Select(x => (x.Server.MetadataAddress, x.Read.Exception?.InnerException?.Message ?? "cancelled"))
            .ToList();
        return new PlaneNodes(Merge(answered), failures);
    }

    /// <summary>
    /// One node per id out of several servers' lists: capacity, used and moved bytes add up (each server reports its
    /// share of the node); CPU and network are the node's own figures, sent to every server with each heartbeat (the
    /// highest is taken, the freshest when one server's copy is a beat behind). The state is the most telling one: dead
    /// on any server (it refuses the node until it restarts, so the node no longer serves that server's jobs), then
    /// suspect, then drained only when drained everywhere, draining while any server still drains it or has drained it,
    /// standby while any holds it in standby, else live.
    /// </summary>
    public static IReadOnlyList<NodeInfo> Merge(IReadOnlyList<IReadOnlyList<NodeInfo>> lists)
    {
        if (lists.Count == 1)
        {
            return lists[0];
        }

        var merged = new Dictionary<uint, (NodeInfo Node, List<NodeState> States)>();
        var order = new List<uint>();
        foreach (var list in lists)
        {
            foreach (var node in list)
            {
                if (!merged.TryGetValue(node.Id, out var seen))
                {
                    merged[node.Id] = (node, [node.State]);
                    order.Add(node.Id);
                    continue;
                }

                seen.States.Add(node.State);
                merged[node.Id] = (seen.Node with
                {
                    Capacity = seen.Node.Capacity + node.Capacity,
                    Used = seen.Node.Used + node.Used,
                    Cpu = Math.Max(seen.Node.Cpu, node.Cpu),
                    NetRxBytesPerSecond = Math.Max(seen.Node.NetRxBytesPerSecond, node.NetRxBytesPerSecond),
                    NetTxBytesPerSecond = Math.Max(seen.Node.NetTxBytesPerSecond, node.NetTxBytesPerSecond),
                    MovedBytes = seen.Node.MovedBytes + node.MovedBytes,
                }, seen.States);
            }
        }

        return [.. order.Select(id => merged[id].Node with { State = StateOf(merged[id].States) })];
    }

    private static NodeState StateOf(List<NodeState> states) =>
        states.Contains(NodeState.Dead) ? NodeState.Dead
        : states.Contains(NodeState.Suspect) ? NodeState.Suspect
        : states.TrueForAll(s => s == NodeState.Drained) ? NodeState.Drained
        : states.Exists(s => s is NodeState.Draining or NodeState.Drained) ? NodeState.Draining
        : states.Contains(NodeState.Standby) ? NodeState.Standby
        : NodeState.Live;

    /// <summary>
    /// Starts draining <paramref name="nodeId"/> on every server that lists it, so each moves its own blocks off it;
    /// the merged state is drained once all of them are done.
    /// </summary>
    /// <exception cref="ObjectNotFoundException">No server has the node live.</exception>
    public Task DrainNodeAsync(uint nodeId, CancellationToken cancellationToken) =>
        OnEveryServerAsync((s, c) => s.DrainNodeAsync(nodeId, c), cancellationToken);

    /// <summary>Activates a standby node on every server, so each may place blocks on its share of it.</summary>
    /// <exception cref="ObjectNotFoundException">No server has the node.</exception>
    public Task ActivateNodeAsync(uint nodeId, CancellationToken cancellationToken) =>
        OnEveryServerAsync((s, c) => s.ActivateNodeAsync(nodeId, c), cancellationToken);

    // A server that does not have the node (it never registered there, or refused its id) is skipped; any other
    // failure is thrown: a drain that one server did not start would leave that server's blocks on a stopped node.
    private async Task OnEveryServerAsync(Func<PocketAdminClient, CancellationToken, Task> action, CancellationToken cancellationToken)
    {
        if (Servers.Count == 1)
        {
            await action(Primary, cancellationToken).ConfigureAwait(false);
            return;
        }

        var calls = Servers.Select(s => action(s, cancellationToken)).ToArray();
        try
        {
            await Task.WhenAll(calls).ConfigureAwait(false);
        }
        catch (ObjectNotFoundException) when (calls.All(c => c.IsCompletedSuccessfully || c.Exception?.InnerException is ObjectNotFoundException))
        {
            if (!calls.Any(c => c.IsCompletedSuccessfully))
            {
                throw;
            }
        }
    }
}
