using Pocket.Admin;
using Pocket.Client;
using Pocket.Protocol;
using static Pocket.Tests.TestSupport;

namespace Pocket.Tests;

/// <summary>Standby (warm-pool) nodes: registered but given no blocks until ActivateNode; bad flags are refused.</summary>
public sealed class StandbyNodeTests
{
    private static async Task<NodeInfo?> NodeAsync(PocketAdminClient admin, uint id, CancellationToken token) =>
        (await admin.GetNodesAsync(token)).SingleOrDefault(n => n.Id == id);

    [Fact]
    public async Task AStandbyNodeGetsNoBlocksUntilItIsActivated()
    {
        await using var cluster = await StartClusterAsync(nodes: 1);
        var index = await cluster.AddNodeAsync(standby: true);
        var standby = cluster.Nodes[index]!.NodeId;
        await using var admin = await cluster.ConnectAsync();
        await using var stranger = await PocketClient.ConnectAsync(cluster.MetadataAddress);
        using var cts = Timeout();
        Assert.Equal(NodeState.Standby, (await NodeAsync(cluster.Admin(admin), standby, cts.Token))!.State);

        // Even a weight map that names only the standby node places nothing on it.
        var job = await cluster.Admin(admin).RegisterJobAsync("held", cts.Token);
        await cluster.Admin(admin).SetWeightsAsync(job.Id, new Dictionary<uint, double> { [standby] = 1 }, cts.Token);
        for (var i = 0; i < 8; i++)
        {
            await job.PutAsync($"before/{i}", DataFor($"before/{i}", 300_000), cancellationToken: cts.Token);
            Assert.DoesNotContain((await job.LookupAsync($"before/{i}", cts.Token))!.Blocks, b => b.NodeId == standby);
        }

        Assert.Equal(0, (await NodeAsync(cluster.Admin(admin), standby, cts.Token))!.Used);

        // Activation needs the cluster token and a standby (or live) node.
        await Assert.ThrowsAsync<PocketUnauthorizedException>(() => stranger.Admin(JobToken.None).ActivateNodeAsync(standby, cts.Token));
        await Assert.ThrowsAsync<ObjectNotFoundException>(() => cluster.Admin(admin).ActivateNodeAsync(9999, cts.Token));
        Assert.Equal(NodeState.Standby, (await NodeAsync(cluster.Admin(admin), standby, cts.Token))!.State);

        await cluster.Admin(admin).ActivateNodeAsync(standby, cts.Token);
        await cluster.Admin(admin).ActivateNodeAsync(standby, cts.Token);
        Assert.Equal(NodeState.Live, (await NodeAsync(cluster.Admin(admin), standby, cts.Token))!.State);
        var after = DataFor("after", 300_000);
        await job.PutAsync("after", after, cancellationToken: cts.Token);
        Assert.All((await job.LookupAsync("after", cts.Token))!.Blocks, b => Assert.Equal(standby, b.NodeId));
        Assert.Equal(Hash(after), Hash(await job.GetAsync("after", cancellationToken: cts.Token)));
    }

    [Fact]
    public async Task AStoppedStandbyNodeLeavesTheListAndADrainedOneNeverServes()
    {
        await using var cluster = await StartClusterAsync(nodes: 1);
        var stopped = await cluster.AddNodeAsync(standby: true);
        var stoppedId = cluster.Nodes[stopped]!.NodeId;
        var drained = await cluster.AddNodeAsync(standby: true);
        var drainedId = cluster.Nodes[drained]!.NodeId;
        await using var admin = await cluster.ConnectAsync();
        using var cts = Timeout();

        // It never held a block, so stopping it is not a death.
        await cluster.StopNodeAsync(stopped);
        await WaitUntilAsync(async () => await NodeAsync(cluster.Admin(admin), stoppedId, cts.Token) is null, "the stopped standby node leaves the list");

        await cluster.Admin(admin).DrainNodeAsync(drainedId, cts.Token);
        Assert.Equal(NodeState.Drained, (await NodeAsync(cluster.Admin(admin), drainedId, cts.Token))!.State);
        await Assert.ThrowsAsync<ObjectNotFoundException>(() => cluster.Admin(admin).ActivateNodeAsync(drainedId, cts.Token));
    }

    [Fact]
    public async Task UnknownRegistrationFlagsAreRefusedAndTheServerGoesOn()
    {
        await using var cluster = await StartClusterAsync(nodes: 0);
        using var socket = await ConnectRawAsync(cluster.Metadata.EndPoint);
        var body = new BodyWriter()
            .U8((byte)NodeTier.Dram)
            .Str("127.0.0.1")
            .U16(9)
            .I64(1 << 20)
            .I32(4096)
            .Bytes(new byte[32])
            .U8(0x02)
            .WrittenSpan.ToArray();
        await SendRawAsync(socket, [.. Header(Opcode.RegisterNode, body.Length, token: cluster.Options.ClusterToken), .. body]);
        var reply = await ReadReplyAsync(socket);
        Assert.NotNull(reply);
        Assert.Equal(Status.BadRequest, reply.Value.Header.Status);

        await SendRawAsync(socket, Header(Opcode.Ping, 0, requestId: 8));
        Assert.Equal(Status.Ok, (await ReadReplyAsync(socket))!.Value.Header.Status);
        await using var admin = await cluster.ConnectAsync();
        Assert.Empty(await cluster.Admin(admin).GetNodesAsync());
    }
}
