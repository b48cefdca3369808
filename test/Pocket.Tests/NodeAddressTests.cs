using Pocket.Admin;
using Pocket.Client;
using Pocket.Protocol;
using Pocket.Protocol.Messages;
using static Pocket.Tests.TestSupport;

namespace Pocket.Tests;

/// <summary>
/// A fresh client (a serverless function's first seconds) learns its nodes' addresses from the Create or Get reply it
/// asked them of (<see cref="FrameFlags.NodeAddresses"/>), not from a ListNodes round trip; a request without the flag
/// (an older client's) gets the reply it always did.
/// </summary>
public sealed class NodeAddressTests
{
    [Fact]
    public async Task AFreshClientsFirstLargePutAndGetListNoNodes()
    {
        await using var cluster = await StartClusterAsync(nodes: 2);
        await using var admin = await cluster.ConnectAsync();
        using var cts = Timeout();
        var registered = await cluster.Admin(admin).RegisterJobAsync("cold", cts.Token);
        var data = RandomBytes(3 << 20, 13);

        await using (var writer = await cluster.ConnectAsync(cancellationToken: cts.Token))
        {
            await writer.OpenJob(registered.Id, registered.Token).PutAsync("big", data, cancellationToken: cts.Token);
            Assert.Equal(0, writer.NodeListings);
        }

        await using var reader = await cluster.ConnectAsync(cancellationToken: cts.Token);
        Assert.Equal(Hash(data), Hash(await reader.OpenJob(registered.Id, registered.Token).GetAsync("big", cancellationToken: cts.Token)));
        Assert.Equal(0, reader.NodeListings);

        // A client that knows the nodes no longer asks; one that meets a node it does not know still lists them.
        Assert.Equal(FrameFlags.None, reader.NodeAddressesFlag);
    }

    [Fact]
    public async Task AFreshClientsPutsToEveryNodeOfItsJobListNoNodes()
    {
        await using var cluster = await StartClusterAsync(nodes: 2);
        await using var admin = await cluster.ConnectAsync();
        using var cts = Timeout();
        var registered = await cluster.Admin(admin).RegisterJobAsync("both", cts.Token);
        var data = RandomBytes(64 << 10, 7);

        // One-block objects go to one node each, drawn by weight: the puts go on until both nodes have taken one (the
        // chance that 200 draws all pick one node is 2^-199). The first Create's reply named both nodes, so the put that
        // first reaches the other node connects to it without asking for the node list. (Sent to the nodes: 64 KiB is
        // inline by default.)
        await using var client = await cluster.ConnectAsync(new PocketClientOptions { SmallObjectThreshold = 0 }, cts.Token);
        var job = client.OpenJob(registered.Id, registered.Token);
        for (var i = 0; i < 200 && client.NodeConnections.Count < 2; i++)
        {
            await job.PutAsync($"object-{i}", data, cancellationToken: cts.Token);
        }

        Assert.Equal(2, client.NodeConnections.Count);
        Assert.Equal(0, client.NodeListings);
    }

    [Fact]
    public async Task ACreateNamesItsGrantsNodesAndTheJobsOtherNodesOnlyWhenAsked()
    {
        await using var cluster = await StartClusterAsync(nodes: 2);
        await using var client = await cluster.ConnectAsync();
        using var cts = Timeout();
        var job = await cluster.Admin(client).RegisterJobAsync("asked", cts.Token);
        var nodes = cluster.Nodes.ToDictionary(n => n!.NodeId, n => (ushort)n!.EndPoint.Port);

        var asked = await CreateAsync(client, job, "asked", FrameFlags.NodeAddresses, cts.Token);
        Assert.True(CreateReply.TryRead(asked, out var withAddresses));
        var granted = new SortedSet<uint>();
        for (var i = 0; i < withAddresses.Grants.Count; i++)
        {
            granted.Add(withAddresses.Grants[i].NodeId);
        }

        // The grants' nodes first, then the job's other nodes (here: every node, as the job has no weights).
        var handle = withAddresses.Handle;
        Assert.Equal(granted, withAddresses.Nodes.Take(granted.Count).Select(n => n.Id).Order().ToList());
        Assert.Equal(nodes.Keys.Order().ToList(), withAddresses.Nodes.Select(n => n.Id).Order().ToList());
        Assert.All(withAddresses.Nodes, n => Assert.Equal((nodes[n.Id], "127.0.0.1"), (n.Port, n.Host)));

        var plain = await CreateAsync(client, job, "plain", FrameFlags.None, cts.Token);
        Assert.True(CreateReply.TryRead(plain, out var withoutAddresses));
        Assert.Empty(withoutAddresses.Nodes);
        Assert.Equal(8 + 4 + (withoutAddresses.Grants.Count * ExtentGrant.Size), plain.Length);

        // The flag asks about one reply: it is not kept with the object (it would come back in every lookup).
        await client.SendMetadataAsync(Opcode.Commit, FrameFlags.None, job.Token, Body(b => CommitRequest.Write(b, handle, 1 << 20)), cts.Token);
        var lookup = await client.SendMetadataAsync(Opcode.Lookup, FrameFlags.None, job.Token, Body(b => b.Str("asked")), cts.Token);
        Assert.True(LookupReply.TryRead(lookup.Body, out var info));
        Assert.Equal(FrameFlags.None, info.Flags & FrameFlags.NodeAddresses);
    }

    private static async Task<byte[]> CreateAsync(Client.PocketClient client, Client.PocketJob job, string key, FrameFlags flags, CancellationToken cancellationToken)
    {
        var reply = await client.SendMetadataAsync(Opcode.Create, flags, job.Token, Body(b => CreateRequest.Write(b, key, 1 << 20)), cancellationToken);
        return reply.Body.ToArray();
    }

    private static ReadOnlyMemory<byte> Body(Action<BodyWriter> write)
    {
        var body = new BodyWriter();
        write(body);
        return body.WrittenMemory;
    }
}
