using System.Diagnostics;
using System.Globalization;
using Pocket.Admin;
using Pocket.Client;
using Pocket.Networking;
using Pocket.Protocol;
using Pocket.Protocol.Messages;
using Xunit.Abstractions;
using static Pocket.Tests.TestSupport;

namespace Pocket.Tests.Network;

/// <summary>
/// Faults of a real network: every role in its own network namespace at its own address (<see cref="NetworkLab"/>),
/// real <c>pocket</c> processes, the client in the test's namespace. A node's link is cut, a link is slowed and made
/// lossy, the metadata server's link flaps, a node is unreachable for the metadata server at Commit. Detection and
/// recovery times are printed (test output), never asserted: bounds on waits are generous for a loaded machine.
/// </summary>
public sealed class NetworkFaultTests(ITestOutputHelper output)
{
    private static readonly TimeSpan Patience = TimeSpan.FromSeconds(90);
    private const long NodeCapacity = 64L << 20;

    [SkippableFact]
    public async Task ACutNodeIsSuspectThenDeadAndOnlyObjectsWithBlocksOnItAreLost()
    {
        await using var lab = NetworkLab.Create();
        using var cts = new CancellationTokenSource(TimeSpan.FromMinutes(4));
        var (cluster, hosts) = await StartAsync(lab, nodes: 3, suspectAfter: TimeSpan.FromSeconds(1), nodeTimeout: TimeSpan.FromSeconds(8));
        await using var client = await ConnectAsync(cluster.Metadata, cts.Token);
        var admin = client.Admin(cluster.Token);
        var victim = cluster.Nodes[0];
        var others = cluster.Nodes.Skip(1).Select(n => n.NodeId).ToDictionary(id => id, _ => 1.0);
        var cut = await admin.RegisterJobAsync("cut", cts.Token);
        var bystander = await admin.RegisterJobAsync("bystander", cts.Token);
        await admin.SetWeightsAsync(bystander.Id, others, cts.Token);

        // Placement is steered so the test knows which objects the cut takes: sizes inline, one block, striped.
        var data = new Dictionary<(PocketJob Job, string Key), byte[]>();
        async Task PutAsync(PocketJob job, string prefix)
        {
            foreach (var size in (int[])[1_000, 200_000, 4 << 20])
            {
                var key = $"{prefix}/{size}";
                data[(job, key)] = DataFor(key, size);
                await job.PutAsync(key, data[(job, key)], cancellationToken: cts.Token);
            }
        }

        await admin.SetWeightsAsync(cut.Id, new Dictionary<uint, double> { [victim.NodeId] = 1 }, cts.Token);
        await PutAsync(cut, "on-victim");
        await admin.SetWeightsAsync(cut.Id, others, cts.Token);
        await PutAsync(cut, "elsewhere");
        await PutAsync(bystander, "bystander");
        await admin.SetWeightsAsync(cut.Id, new Dictionary<uint, double>(), cts.Token);

        // Every connection warm (the cut also stalls live connections), and where each object lives.
        var lost = new List<(PocketJob Job, string Key)>();
        foreach (var ((job, key), bytes) in data)
        {
            Assert.Equal(Hash(bytes), Hash(await job.GetAsync(key, cancellationToken: cts.Token)));
            if ((await job.LookupAsync(key, cts.Token))!.Blocks.Any(b => b.NodeId == victim.NodeId))
            {
                lost.Add((job, key));
            }
        }

        Assert.Equal(["on-victim/200000", "on-victim/4194304"], lost.Select(l => l.Key).Order());
        var safe = data.Keys.Except(lost).ToList();

        var clock = Stopwatch.StartNew();
        lab.Cut(hosts[victim.NodeId]);
        await WaitForStateAsync(admin, victim.NodeId, NodeState.Suspect);
        var suspectAt = clock.Elapsed;

        // A reader of its blocks is refused at once with the typed, retryable error naming the node.
        var asked = Stopwatch.StartNew();
        var unavailable = await Assert.ThrowsAsync<NodeUnavailableException>(async () => await cut.GetAsync(lost[0].Key, cancellationToken: cts.Token));
        var unavailableIn = asked.Elapsed;
        Assert.Contains($"storage node {victim.NodeId}", unavailable.Message, StringComparison.Ordinal);

        // Meanwhile everything else works: reads of other objects, and new objects of both jobs (placed elsewhere).
        await ReadAllAsync(safe);
        await PutAsync(bystander, "during");
        await PutAsync(cut, "during");
        safe.AddRange(data.Keys.Where(k => k.Key.StartsWith("during/", StringComparison.Ordinal)));

        await WaitForStateAsync(admin, victim.NodeId, NodeState.Dead);
        var deadAt = clock.Elapsed;
        foreach (var (job, key) in lost)
        {
            var gone = await Assert.ThrowsAsync<NodeLostException>(async () => await job.GetAsync(key, cancellationToken: cts.Token));
            Assert.Contains(key, gone.Message, StringComparison.Ordinal);
        }

        await ReadAllAsync(safe);
        await PutAsync(cut, "after");
        await ReadAllAsync(data.Keys.Where(k => k.Key.StartsWith("after/", StringComparison.Ordinal)));

        // Its link back: the node was declared dead, so it registers again as a new, empty node at its address.
        lab.Restore(hosts[victim.NodeId]);
        var victimHost = hosts[victim.NodeId].Address;
        await WaitUntilAsync(
            async () => (await admin.GetNodesAsync(cts.Token)).Any(n => n.Host == victimHost && n.Id != victim.NodeId && n.State == NodeState.Live),
            $"the cut node at {victimHost} registers again");
        var backAt = clock.Elapsed;
        await Assert.ThrowsAsync<NodeLostException>(async () => await cut.GetAsync(lost[0].Key, cancellationToken: cts.Token));
        await ReadAllAsync(safe);

        output.WriteLine(string.Create(
            CultureInfo.InvariantCulture,
            $"cut node {victim.NodeId} (suspect after 1 s, dead after 8 s): suspect {suspectAt.TotalSeconds:0.00} s, NodeUnavailable answered in {unavailableIn.TotalMilliseconds:0} ms, dead {deadAt.TotalSeconds:0.00} s, registered again {backAt.TotalSeconds:0.00} s after the cut ({(backAt - deadAt).TotalSeconds:0.00} s after restoring the link)"));

        async Task ReadAllAsync(IEnumerable<(PocketJob Job, string Key)> keys)
        {
            foreach (var (job, key) in keys)
            {
                Assert.Equal(Hash(data[(job, key)]), Hash(await job.GetAsync(key, cancellationToken: cts.Token)));
            }
        }
    }

    [SkippableFact]
    public async Task ANodeCutLongerThanItsRequestTimeoutComesBackAsTheSameNodeWithItsData()
    {
        await using var lab = NetworkLab.Create();
        using var cts = new CancellationTokenSource(TimeSpan.FromMinutes(4));

        // Dead only after 5 minutes, so a cut of 35 s leaves the node suspect; its heartbeat in flight outlives the
        // node's own request timeout (30 s) to the metadata server.
        var (cluster, hosts) = await StartAsync(lab, nodes: 1, suspectAfter: TimeSpan.FromSeconds(1), nodeTimeout: TimeSpan.FromMinutes(5));
        await using var client = await ConnectAsync(cluster.Metadata, cts.Token);
        var admin = client.Admin(cluster.Token);
        var job = await admin.RegisterJobAsync("long-cut", cts.Token);
        var node = cluster.Nodes[0];
        var data = DataFor("kept", 3 << 20);
        await job.PutAsync("kept", data, cancellationToken: cts.Token);

        var clock = Stopwatch.StartNew();
        lab.Cut(hosts[node.NodeId]);
        await WaitForStateAsync(admin, node.NodeId, NodeState.Suspect);
        var suspectAt = clock.Elapsed;
        await Assert.ThrowsAsync<NodeUnavailableException>(async () => await job.GetAsync("kept", cancellationToken: cts.Token));
        await Task.Delay(TimeSpan.FromSeconds(35), cts.Token);
        lab.Restore(hosts[node.NodeId]);
        var restoredAt = clock.Elapsed;

        await WaitForStateAsync(admin, node.NodeId, NodeState.Live);
        var liveAt = clock.Elapsed;
        Assert.Equal([node.NodeId], (await admin.GetNodesAsync(cts.Token)).Select(n => n.Id));
        Assert.Equal(Hash(data), Hash(await job.GetAsync("kept", cancellationToken: cts.Token)));
        output.WriteLine(string.Create(
            CultureInfo.InvariantCulture,
            $"node {node.NodeId} cut for {restoredAt.TotalSeconds:0.0} s: suspect after {suspectAt.TotalSeconds:0.00} s, live again {(liveAt - restoredAt).TotalSeconds:0.00} s after the link came back"));
    }

    [SkippableFact]
    public async Task PutsAndGetsOverADelayedLossyLinkAreByteIdentical()
    {
        await using var lab = NetworkLab.Create();
        using var cts = new CancellationTokenSource(TimeSpan.FromMinutes(4));

        // Every node behind 5 ms of delay and 1 % frame loss each way (so 10 ms more per round trip, and retransmissions).
        var (cluster, _) = await StartAsync(lab, nodes: 2, suspectAfter: TimeSpan.FromSeconds(3), nodeTimeout: TimeSpan.FromSeconds(60), slow: (TimeSpan.FromMilliseconds(5), 0.01));
        await using var client = await ConnectAsync(cluster.Metadata, cts.Token, requestTimeout: TimeSpan.FromSeconds(30));
        var admin = client.Admin(cluster.Token);
        var job = await admin.RegisterJobAsync("lossy", cts.Token);

        var small = Stopwatch.StartNew();
        for (var i = 0; i < 20; i++)
        {
            // Over the inline threshold, so each goes to a node over the slow link.
            var key = $"small/{i}";
            var bytes = DataFor(key, 20_000 + i);
            await job.PutAsync(key, bytes, cancellationToken: cts.Token);
            Assert.Equal(Hash(bytes), Hash(await job.GetAsync(key, cancellationToken: cts.Token)));
        }

        var smallTime = small.Elapsed;
        // 1 KiB objects through the nodes too (not inline at the metadata server): a client that sends nothing inline.
        await using (var throughNodes = await PocketClient.ConnectAsync(cluster.Metadata, new PocketClientOptions { SmallObjectThreshold = 0, RequestTimeout = TimeSpan.FromSeconds(30) }, cts.Token))
        {
            var nodeJob = throughNodes.OpenJob(job.Id, job.Token);
            for (var i = 0; i < 20; i++)
            {
                var key = $"kib/{i}";
                var bytes = DataFor(key, 1024);
                await nodeJob.PutAsync(key, bytes, cancellationToken: cts.Token);
                Assert.False((await nodeJob.LookupAsync(key, cts.Token))!.Inline);
                Assert.Equal(bytes, await nodeJob.GetAsync(key, cancellationToken: cts.Token));
            }
        }

        var large = Stopwatch.StartNew();
        for (var i = 0; i < 4; i++)
        {
            var key = $"large/{i}";
            var bytes = DataFor(key, 4 << 20);
            await job.PutAsync(key, bytes, cancellationToken: cts.Token);
            Assert.Equal(Hash(bytes), Hash(await job.GetAsync(key, cancellationToken: cts.Token)));
        }

        var largeTime = large.Elapsed;
        var links = lab.SlowLinks;
        output.WriteLine(string.Create(
            CultureInfo.InvariantCulture,
            $"5 ms + 1 % loss per direction: 20 puts and gets of 20 KB in {smallTime.TotalMilliseconds:0} ms ({smallTime.TotalMilliseconds / 40:0.0} ms each), 4 puts and gets of 4 MiB in {largeTime.TotalMilliseconds:0} ms ({8.0 * 4 * 2 / largeTime.TotalSeconds:0.0} MiB/s); frames forwarded {links.Sum(l => l.Forwarded)}, dropped {links.Sum(l => l.Dropped)}"));
        Assert.True(links.Sum(l => l.Dropped) > 0, "the slow links dropped no frame: the loss was not applied");
    }

    [SkippableFact]
    public async Task AFlappingMetadataLinkGivesTypedErrorsThenTheSameNodesServeAllTheirData()
    {
        await using var lab = NetworkLab.Create();
        using var cts = new CancellationTokenSource(TimeSpan.FromMinutes(4));
        var (cluster, hosts) = await StartAsync(lab, nodes: 2, suspectAfter: TimeSpan.FromSeconds(1), nodeTimeout: TimeSpan.FromSeconds(60));
        await using var client = await ConnectAsync(cluster.Metadata, cts.Token, requestTimeout: TimeSpan.FromSeconds(2));
        var admin = client.Admin(cluster.Token);
        var job = await admin.RegisterJobAsync("flap", cts.Token);
        var data = new Dictionary<string, byte[]>();
        foreach (var size in (int[])[1_000, 100_000, 1 << 20, 4 << 20])
        {
            var key = $"before/{size}";
            data[key] = DataFor(key, size);
            await job.PutAsync(key, data[key], cancellationToken: cts.Token);
        }

        var ids = cluster.Nodes.Select(n => n.NodeId).Order().ToList();
        var metadataHost = hosts[0];
        for (var flap = 0; flap < 3; flap++)
        {
            lab.Cut(metadataHost);
            var clock = Stopwatch.StartNew();

            // While it is away a request fails with a typed error within the client's request timeout, never hangs.
            var during = await Record.ExceptionAsync(async () => await job.GetAsync("before/1000", cancellationToken: cts.Token));
            var failedIn = clock.Elapsed;
            Assert.True(during is RequestTimeoutException or PocketUnreachableException, $"flap {flap}: expected a request timeout or unreachable error, got {during?.ToString() ?? "success"}");
            await Task.Delay(TimeSpan.FromSeconds(3) - clock.Elapsed is { Ticks: > 0 } rest ? rest : TimeSpan.Zero, cts.Token);
            lab.Restore(metadataHost);
            var restored = clock.Elapsed;

            // Back: the first request that gets through, then the same nodes live again (no re-registration as new).
            await WaitUntilAsync(
                async () =>
                {
                    try
                    {
                        return (await job.GetAsync("before/1000", cancellationToken: cts.Token)).Length == 1_000;
                    }
                    catch (Exception ex) when (ex is RequestTimeoutException or PocketUnreachableException or NodeUnavailableException)
                    {
                        return false;
                    }
                },
                "the metadata server answers again");
            var answeredAt = clock.Elapsed;
            foreach (var id in ids)
            {
                await WaitForStateAsync(admin, id, NodeState.Live);
            }

            var liveAt = clock.Elapsed;
            output.WriteLine(string.Create(
                CultureInfo.InvariantCulture,
                $"flap {flap}: link down {restored.TotalSeconds:0.00} s; request failed with {during!.GetType().Name} after {failedIn.TotalSeconds:0.00} s; first answer {(answeredAt - restored).TotalSeconds:0.00} s after restore; all nodes live {(liveAt - restored).TotalSeconds:0.00} s after restore"));
        }

        Assert.Equal(ids, (await admin.GetNodesAsync(cts.Token)).Select(n => n.Id).Order().ToList());
        foreach (var (key, bytes) in data)
        {
            Assert.Equal(Hash(bytes), Hash(await job.GetAsync(key, cancellationToken: cts.Token)));
        }

        var after = DataFor("after", 4 << 20);
        await job.PutAsync("after", after, cancellationToken: cts.Token);
        Assert.Equal(Hash(after), Hash(await job.GetAsync("after", cancellationToken: cts.Token)));
    }

    [SkippableTheory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task ACommitSucceedsWhileTheNodeIsUnreachableAndItsWriteGrantDiesOnceReachableOrRead(bool readFirst)
    {
        await using var lab = NetworkLab.Create();
        using var cts = new CancellationTokenSource(TimeSpan.FromMinutes(4));
        var (cluster, hosts) = await StartAsync(lab, nodes: 1, suspectAfter: TimeSpan.FromSeconds(30), nodeTimeout: TimeSpan.FromSeconds(120));
        await using var client = await ConnectAsync(cluster.Metadata, cts.Token);
        var admin = client.Admin(cluster.Token);
        var job = await admin.RegisterJobAsync("unreachable", cts.Token);
        var node = cluster.Nodes[0];
        await using var metadata = await FrameConnection.ConnectAsync(Host(cluster.Metadata), Port(cluster.Metadata), new FrameConnectionOptions(), cts.Token);
        await using var storage = await FrameConnection.ConnectAsync(Host(node.Address), Port(node.Address), new FrameConnectionOptions(), cts.Token);

        const int Size = 300_000;
        var data = DataFor("sealed", Size);
        var body = new BodyWriter();
        CreateRequest.Write(body, "sealed", Size);
        var created = await metadata.SendAsync(Opcode.Create, FrameFlags.None, job.Token, body.WrittenMemory, cancellationToken: cts.Token);
        Assert.True(created.IsOk, created.Message);
        var (handle, grants) = ParseCreate(created.Body);
        var grant = Assert.Single(grants);
        Assert.Equal(Status.Ok, await WriteAsync(grant, data));

        // The metadata server can no longer reach the node (its packets to it are dropped); the client still can.
        lab.Block(hosts[0], hosts[node.NodeId]);
        var clock = Stopwatch.StartNew();
        body.Reset();
        CommitRequest.Write(body, handle, Size);
        var committed = await metadata.SendAsync(Opcode.Commit, FrameFlags.None, job.Token, body.WrittenMemory, cancellationToken: cts.Token);
        var commitTook = clock.Elapsed;
        Assert.True(committed.IsOk, $"Commit while the node is unreachable: {committed.Status}: {committed.Message}");

        string how;
        if (readFirst)
        {
            // The first read of the committed object seals its extent on the node itself, reachable or not.
            Assert.Equal(Hash(data), Hash(await job.GetAsync("sealed", cancellationToken: cts.Token)));
            Assert.Equal(Status.StaleGrant, await WriteAsync(grant, DataFor("overwrite", Size)));
            how = "at the first read, with the node still unreachable for the metadata server";
            lab.Unblock(hosts[0], hosts[node.NodeId]);
        }
        else
        {
            // Reachable again: the seal gets through (retried in the background) and the old write grant can no
            // longer change the committed object. Writing the same bytes while waiting changes nothing if it lands.
            lab.Unblock(hosts[0], hosts[node.NodeId]);
            var unblocked = clock.Elapsed;
            await WaitUntilAsync(async () => await WriteAsync(grant, data) == Status.StaleGrant, "the write grant is sealed once the node is reachable");
            how = string.Create(CultureInfo.InvariantCulture, $"{(clock.Elapsed - unblocked).TotalSeconds:0.00} s after the node was reachable again");
            Assert.Equal(Status.StaleGrant, await WriteAsync(grant, DataFor("overwrite", Size)));
        }

        Assert.Equal(Hash(data), Hash(await job.GetAsync("sealed", cancellationToken: cts.Token)));
        output.WriteLine(string.Create(CultureInfo.InvariantCulture, $"commit with the node unreachable took {commitTook.TotalSeconds:0.00} s; the write grant was sealed {how}"));

        async Task<Status> WriteAsync(ExtentGrant extent, ReadOnlyMemory<byte> bytes)
        {
            var head = new BodyWriter();
            WriteExtentRequest.Write(head, extent, 0);
            return (await storage.SendAsync(Opcode.WriteExtent, FrameFlags.None, JobToken.None, head.WrittenMemory, bytes, cancellationToken: cts.Token)).Status;
        }
    }

    private static (ulong Handle, List<ExtentGrant> Grants) ParseCreate(byte[] body)
    {
        Assert.True(CreateReply.TryRead(body, out var created));
        return (created.Handle, ToList(created.Grants));
    }

    private static List<ExtentGrant> ToList(GrantList list)
    {
        var grants = new List<ExtentGrant>(list.Count);
        for (var i = 0; i < list.Count; i++)
        {
            grants.Add(list[i]);
        }

        return grants;
    }

    private static string Host(string address) => address[..address.LastIndexOf(':')];

    private static int Port(string address) => int.Parse(address.AsSpan(address.LastIndexOf(':') + 1), CultureInfo.InvariantCulture);

    /// <summary>A metadata server and <paramref name="nodes"/> dram nodes, each in its own namespace; hosts by node id (the metadata server's is 0).</summary>
    private static async Task<(LabCluster Cluster, Dictionary<uint, NetworkHost> Hosts)> StartAsync(
        NetworkLab lab, int nodes, TimeSpan suspectAfter, TimeSpan nodeTimeout, (TimeSpan Delay, double Loss)? slow = null)
    {
        var token = JobToken.NewRandom();
        var metadataHost = lab.AddHost("metadata");
        var metadata = await lab.StartMetadataAsync(metadataHost, token, suspectAfter, nodeTimeout);
        var hosts = new Dictionary<uint, NetworkHost> { [0] = metadataHost };
        var started = new List<LabProcess>();
        for (var i = 0; i < nodes; i++)
        {
            var host = slow is { } link ? lab.AddSlowHost($"storage {i}", link.Delay, link.Loss) : lab.AddHost($"storage {i}");
            var node = await lab.StartStorageAsync(host, token, metadata.Address, NodeCapacity);
            hosts[node.NodeId] = host;
            started.Add(node);
        }

        return (new LabCluster(metadata.Address, token, started), hosts);
    }

    private static async Task<PocketClient> ConnectAsync(string metadata, CancellationToken cancellationToken, TimeSpan? requestTimeout = null) =>
        await PocketClient.ConnectAsync(metadata, new PocketClientOptions { RequestTimeout = requestTimeout ?? TimeSpan.FromSeconds(10) }, cancellationToken);

    private static async Task WaitForStateAsync(PocketAdminClient admin, uint nodeId, NodeState state)
    {
        var deadline = Stopwatch.StartNew();
        while ((await admin.GetNodesAsync()).SingleOrDefault(n => n.Id == nodeId)?.State != state)
        {
            Assert.True(deadline.Elapsed < Patience, $"node {nodeId} did not become {state} within {Patience.TotalSeconds} s");
            await Task.Delay(20);
        }
    }

    private sealed record LabCluster(string Metadata, JobToken Token, List<LabProcess> Nodes);
}
