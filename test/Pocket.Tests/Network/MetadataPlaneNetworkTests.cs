using Pocket.Admin;
using Pocket.Client;
using Pocket.Networking;
using Pocket.Protocol;
using static Pocket.Tests.TestSupport;

namespace Pocket.Tests.Network;

/// <summary>
/// Several metadata servers, each a real <c>pocket metadata</c> in its own network namespace at its own address, and
/// storage nodes in namespaces of their own serving all of them (<see cref="NetworkLab"/>): the metadata plane as it is
/// deployed across hosts, not on one loopback address.
/// </summary>
public sealed class MetadataPlaneNetworkTests
{
    private const long NodeCapacity = 64L << 20;

    [SkippableFact]
    public async Task TwoMetadataServersOnTheirOwnHostsShareTheNodesAndACutServerStopsOnlyItsOwnJobsThenLosesItsShare()
    {
        await using var lab = NetworkLab.Create();
        using var cts = new CancellationTokenSource(TimeSpan.FromMinutes(4));
        var token = JobToken.NewRandom();
        var hostA = lab.AddHost("metadata a");
        var hostB = lab.AddHost("metadata b");
        var a = await lab.StartMetadataAsync(hostA, token, TimeSpan.FromSeconds(3), TimeSpan.FromSeconds(20), jobNumbers: (0, 2));
        var b = await lab.StartMetadataAsync(hostB, token, TimeSpan.FromSeconds(3), TimeSpan.FromSeconds(60), jobNumbers: (1, 2));
        Assert.NotEqual(Host(a.Address), Host(b.Address));
        for (var i = 0; i < 2; i++)
        {
            await lab.StartStorageAsync(lab.AddHost($"storage {i}"), token, $"{a.Address},{b.Address}", NodeCapacity);
        }

        await using var clientA = await ConnectAsync(a.Address, cts.Token);
        await using var clientB = await ConnectAsync(b.Address, cts.Token);
        var adminA = clientA.Admin(token);
        var adminB = clientB.Admin(token);

        // Both nodes joined both servers (a server a node registered with first may list it a heartbeat before the other).
        foreach (var admin in (PocketAdminClient[])[adminA, adminB])
        {
            await WaitUntilAsync(async () => (await admin.GetNodesAsync(cts.Token)).Count(n => n.State == NodeState.Live) == 2, "both nodes serve both servers");
        }

        var jobA = await adminA.RegisterJobAsync("on-a", cts.Token);
        var jobB = await adminB.RegisterJobAsync("on-b", cts.Token);
        Assert.NotEqual(jobA.Id, jobB.Id);
        var data = new Dictionary<(PocketJob Job, string Key), byte[]>();
        async Task PutAsync(PocketJob job, string prefix)
        {
            foreach (var size in (int[])[1_000, 200_000, 4 << 20])
            {
                var key = $"{prefix}/{size}";
                data[(job, key)] = DataFor($"{job.Id}/{key}", size);
                await job.PutAsync(key, data[(job, key)], cancellationToken: cts.Token);
            }
        }

        await PutAsync(jobA, "before");
        await PutAsync(jobB, "before");

        // Each server's objects live on the shared nodes, in blocks no other server's object uses.
        var blocks = new HashSet<(uint Node, long Offset)>();
        foreach (var ((job, key), bytes) in data)
        {
            Assert.Equal(Hash(bytes), Hash(await job.GetAsync(key, cancellationToken: cts.Token)));
            foreach (var block in (await job.LookupAsync(key, cts.Token))!.Blocks)
            {
                Assert.True(blocks.Add((block.NodeId, block.Offset)), $"{job.Id}/{key}: block at {block.Offset} of node {block.NodeId} is another object's");
            }
        }

        // Server a's host is cut off: its job's requests fail with a typed error; server b's job reads and writes as
        // before, and b keeps hearing both nodes past its suspect time (a node waiting on a's heartbeat reply must not
        // leave b without heartbeats).
        var cut = System.Diagnostics.Stopwatch.StartNew();
        lab.Cut(hostA);
        var during = await Record.ExceptionAsync(async () => await jobA.GetAsync("before/1000", cancellationToken: cts.Token));
        Assert.True(during is RequestTimeoutException or PocketUnreachableException, $"expected a request timeout or unreachable error, got {during?.ToString() ?? "success"}");
        await Task.Delay(TimeSpan.FromSeconds(8) - cut.Elapsed is { Ticks: > 0 } rest ? rest : TimeSpan.Zero, cts.Token);
        Assert.All(await adminB.GetNodesAsync(cts.Token), n => Assert.Equal(NodeState.Live, n.State));
        await PutAsync(jobB, "during");
        foreach (var ((job, key), bytes) in data.Where(d => d.Key.Job == jobB))
        {
            Assert.Equal(Hash(bytes), Hash(await job.GetAsync(key, cancellationToken: cts.Token)));
        }

        // Silent past the nodes' limit (30 s), a's share goes to b: b's view of each node grows to the whole node, and b
        // can hold more than its half of the cluster.
        await WaitUntilAsync(async () => (await adminB.GetNodesAsync(cts.Token)).All(n => n.Capacity == NodeCapacity), "a's share went to b on both nodes");
        for (var i = 0; i < 20; i++)
        {
            var key = $"more/{i}";
            data[(jobB, key)] = DataFor($"{jobB.Id}/{key}", 4 << 20);
            await jobB.PutAsync(key, data[(jobB, key)], cancellationToken: cts.Token);
        }

        // Back: a declared the nodes dead (20 s) meanwhile, so its objects in their blocks are lost with a typed error,
        // its inline one is intact, the nodes join it again, and it places new objects; b's data is untouched.
        lab.Restore(hostA);
        await WaitUntilAsync(
            async () =>
            {
                try
                {
                    return (await adminA.GetNodesAsync(cts.Token)).Count(n => n.State == NodeState.Live) == 2;
                }
                catch (Exception ex) when (ex is RequestTimeoutException or PocketUnreachableException)
                {
                    return false;
                }
            },
            "both nodes serve a again");
        Assert.Equal(Hash(data[(jobA, "before/1000")]), Hash(await jobA.GetAsync("before/1000", cancellationToken: cts.Token)));
        await Assert.ThrowsAsync<NodeLostException>(async () => await jobA.GetAsync($"before/{4 << 20}", cancellationToken: cts.Token));
        var after = DataFor("after", 4 << 20);
        await jobA.PutAsync("after", after, cancellationToken: cts.Token);
        Assert.Equal(Hash(after), Hash(await jobA.GetAsync("after", cancellationToken: cts.Token)));
        foreach (var ((job, key), bytes) in data.Where(d => d.Key.Job == jobB))
        {
            Assert.Equal(Hash(bytes), Hash(await job.GetAsync(key, cancellationToken: cts.Token)));
        }
    }

    private static string Host(string address) => address[..address.LastIndexOf(':')];

    private static async Task<PocketClient> ConnectAsync(string metadata, CancellationToken cancellationToken) =>
        await PocketClient.ConnectAsync(metadata, new PocketClientOptions { RequestTimeout = TimeSpan.FromSeconds(3) }, cancellationToken);
}
