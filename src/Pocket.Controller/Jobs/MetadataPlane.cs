using Pocket.Admin;
using Pocket.Client;
using Pocket.Controller.Provisioning;
using Pocket.Protocol;

namespace Pocket.Controller.Jobs;

/// <summary>What the controller reads of one metadata server's load when it places a job.</summary>
/// <param name="Jobs">The controller's live jobs on it.</param>
/// <param name="Requests">Requests those jobs made, as of the last lease check.</param>
/// <param name="Cpu">The server's CPU over the last telemetry interval, as a fraction of one core (0 before its first reading).</param>
internal readonly record struct MetadataLoad(int Jobs, long Requests, double Cpu = 0)
{
    /// <summary>A server that must get no job (lost, draining or not yet joined by the nodes): it counts as full.</summary>
    public static MetadataLoad Full { get; } = new(int.MaxValue, long.MaxValue, double.MaxValue);
}

/// <summary>
/// One metadata server's load as the controller last measured it (<see cref="Scaling.MetadataScaler"/>): the differences
/// of two <see cref="Protocol.Messages.ServerLoad"/> readings over the server's own clock.
/// </summary>
/// <param name="Cpu">CPU used per second, as a fraction of one core (1.5: one and a half cores busy).</param>
/// <param name="HostCpu">The same as a fraction of every processor the server may use.</param>
/// <param name="RequestsPerSecond">Job requests handled per second.</param>
/// <param name="At">When the controller read it.</param>
internal readonly record struct MetadataServerUsage(double Cpu, double HostCpu, double RequestsPerSecond, DateTimeOffset At);

/// <summary>Where a metadata server stands in the plane.</summary>
internal enum MetadataServerState
{
    /// <summary>Takes new jobs.</summary>
    Serving,

    /// <summary>Just started by the controller: no job is placed on it until the storage nodes have joined it.</summary>
    Joining,

    /// <summary>Leaving: no new job is placed on it, and it is stopped once its jobs have ended.</summary>
    Draining,
}

/// <summary>One read of every metadata server's node list, merged per node (<see cref="MetadataPlane.Merge"/>).</summary>
/// <param name="Nodes">Each node once, as the plane sees it.</param>
/// <param name="Failures">The servers that did not answer, with why (empty when all did).</param>
internal sealed record PlaneNodes(IReadOnlyList<NodeInfo> Nodes, IReadOnlyList<(string Address, string Error)> Failures);

/// <summary>
/// The metadata servers the controller places jobs on (docs/architecture.md, "Several metadata servers"). Every
/// storage node serves all of them under one node id, each server holding a share of its capacity, so the cluster's
/// view of a node is the merge of every server's (<see cref="GetNodesAsync"/>), and a drain or an activation goes to
/// every server that lists the node. With one server every call is that server's, unchanged.
/// <para>
/// The plane has <see cref="Slots"/>: every address a metadata server may serve at, the running ones and the spare ones
/// the metadata-plane scaler may start a server at later. Storage nodes are told every slot when they start, so a server
/// started in a spare slot is joined by them within a heartbeat round, like a replacement at a lost server's address;
/// a slot's place is also its job numbering (offset = its index, stride = the number of slots).
/// </para>
/// </summary>
internal sealed class MetadataPlane
{
    private volatile PocketAdminClient[] _servers;
    private readonly Dictionary<string, MetadataServerState> _states = new(StringComparer.OrdinalIgnoreCase);
    private readonly Dictionary<string, MetadataServerUsage> _usage = new(StringComparer.OrdinalIgnoreCase);
    private readonly Dictionary<string, ProvisionedMetadata> _owned = new(StringComparer.OrdinalIgnoreCase);

    public MetadataPlane(IReadOnlyList<PocketAdminClient> servers, IReadOnlyList<string>? spareSlots = null)
    {
        _servers = servers.Count > 0 ? [.. servers] : throw new ArgumentException("a metadata plane needs a server");
        Slots = [.. servers.Select(s => s.MetadataAddress), .. spareSlots ?? []];
        if (Slots.Distinct(StringComparer.OrdinalIgnoreCase).Count() != Slots.Count)
        {
            throw new ArgumentException("a metadata address is listed twice");
        }
    }

    /// <summary>The servers in the plane now (serving, joining or draining), the first one first; a snapshot.</summary>
    public IReadOnlyList<PocketAdminClient> Servers => _servers;

    /// <summary>Every address a metadata server may serve at: the first servers', then the spare ones, in a fixed order.</summary>
    public IReadOnlyList<string> Slots { get; }

    /// <summary>The first server: never drained, and the one a job without a recorded server belongs to.</summary>
    public PocketAdminClient Primary => _servers[0];

    /// <summary>The place of <paramref name="address"/> among the slots (its job-number offset); -1 when it is none.</summary>
    public int SlotOf(string address)
    {
        for (var i = 0; i < Slots.Count; i++)
        {
            if (string.Equals(Slots[i], address, StringComparison.OrdinalIgnoreCase))
            {
                return i;
            }
        }

        return -1;
    }

    /// <summary>Adds a server started in a spare slot, <see cref="MetadataServerState.Joining"/> until <see cref="SetState"/> says otherwise.</summary>
    public void Add(PocketAdminClient server, ProvisionedMetadata? started)
    {
        lock (_states)
        {
            _states[server.MetadataAddress] = MetadataServerState.Joining;
            if (started is not null)
            {
                _owned[server.MetadataAddress] = started;
            }

            _servers = [.. _servers, server];
        }
    }

    /// <summary>Takes a stopped server out of the plane (never the first); returns it, for the caller to dispose of its client.</summary>
    public PocketAdminClient? Remove(string address)
    {
        lock (_states)
        {
            var removed = _servers.Skip(1).FirstOrDefault(s => string.Equals(s.MetadataAddress, address, StringComparison.OrdinalIgnoreCase));
            if (removed is null)
            {
                return null;
            }

            _servers = [.. _servers.Where(s => !ReferenceEquals(s, removed))];
            _states.Remove(address);
            _usage.Remove(address);
            _owned.Remove(address);
            return removed;
        }
    }

    /// <summary>Where the server at <paramref name="address"/> stands (a server of the first set serves unless drained).</summary>
    public MetadataServerState StateOf(string address)
    {
        lock (_states)
        {
            return _states.GetValueOrDefault(address, MetadataServerState.Serving);
        }
    }

    /// <summary>Sets where the server at <paramref name="address"/> stands.</summary>
    public void SetState(string address, MetadataServerState state)
    {
        lock (_states)
        {
            _states[address] = state;
        }
    }

    /// <summary>True when a new job may be placed on <paramref name="server"/>: it is up and serving (not joining or draining).</summary>
    public bool Accepts(PocketAdminClient server) => IsUp(server) && StateOf(server.MetadataAddress) == MetadataServerState.Serving;

    /// <summary>The last load measured on the server at <paramref name="address"/>, or null before its second reading.</summary>
    public MetadataServerUsage? UsageOf(string address)
    {
        lock (_states)
        {
            return _usage.TryGetValue(address, out var usage) ? usage : null;
        }
    }

    /// <summary>Records the load measured on the server at <paramref name="address"/>.</summary>
    public void SetUsage(string address, MetadataServerUsage usage)
    {
        lock (_states)
        {
            _usage[address] = usage;
        }
    }

    /// <summary>The process the provisioner started for the server at <paramref name="address"/>, when the controller knows it.</summary>
    public ProvisionedMetadata? StartedAt(string address)
    {
        lock (_states)
        {
            return _owned.GetValueOrDefault(address);
        }
    }

    /// <summary>Records the process serving at <paramref name="address"/> (a replacement after a loss replaces the record).</summary>
    public void SetStarted(string address, ProvisionedMetadata started)
    {
        lock (_states)
        {
            _owned[address] = started;
        }
    }

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

    /// <summary>CPU readings closer than this (a tenth of a core) count as equal when a job is placed.</summary>
    public const double CpuStep = 0.1;

    /// <summary>
    /// The server a new job goes to: among those whose CPU is within <see cref="CpuStep"/> of a core of the least busy
    /// one's (closer readings are noise, and registrations within one telemetry interval all see the same reading), the
    /// one with the fewest live jobs (which spreads a burst of registrations before their requests show), then the
    /// fewest requests from them, then the first. (Steps of the CPU, floor(cpu / step), would put readings of 0.09 and
    /// 0.11 a step apart and send a whole burst to the one reading 0.09.) A full server is chosen only when all are.
    /// </summary>
    public static int Choose(IReadOnlyList<MetadataLoad> load)
    {
        var least = double.MaxValue;
        foreach (var server in load)
        {
            least = Math.Min(least, Math.Max(0, server.Cpu));
        }

        var best = -1;
        for (var i = 0; i < load.Count; i++)
        {
            var server = load[i];
            if (server == MetadataLoad.Full || Math.Max(0, server.Cpu) >= least + CpuStep)
            {
                continue;
            }

            if (best < 0 || (server.Jobs, server.Requests).CompareTo((load[best].Jobs, load[best].Requests)) < 0)
            {
                best = i;
            }
        }

        return Math.Max(best, 0);
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
        var servers = _servers;
        if (servers.Length == 1)
        {
            return new PlaneNodes(await servers[0].GetNodesAsync(cancellationToken).ConfigureAwait(false), []);
        }

        var reads = servers.Select(s => s.GetNodesAsync(cancellationToken)).ToArray();
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
            .Select((r, i) => (Read: r, Server: servers[i]))
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
        var servers = _servers;
        if (servers.Length == 1)
        {
            await action(servers[0], cancellationToken).ConfigureAwait(false);
            return;
        }

        var calls = servers.Select(s => action(s, cancellationToken)).ToArray();
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
