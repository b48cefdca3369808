using System.Net;
using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.Extensions.Time.Testing;
using Pocket.Admin;
using Pocket.Client;
using Pocket.Embedded;
using Pocket.Networking;
using Pocket.Protocol;
using Pocket.Protocol.Messages;
using Pocket.StorageServer;
using static Pocket.Tests.TestSupport;

namespace Pocket.Tests;

/// <summary>
/// Grants die when their object's life says so: a write grant at Commit (at the seal the metadata server sends after
/// its reply, or at the first read, whichever reaches the node first) and at Abort, every grant of an object at
/// Delete (and at the release of a delete-after-read), and any grant at its expiry. Only the metadata server can seal
/// or forget. All over real sockets against a real cluster.
/// </summary>
public sealed class GrantRevocationTests
{
    /// <summary>Over the inline limit, so the object lives on storage nodes, and over a stripe unit, so in several extents.</summary>
    private const int Size = 1_300_000;

    [Fact]
    public async Task AWriteGrantIsStaleOnceTheCommittedObjectIsReadAndTheObjectsBytesStay()
    {
        await using var cluster = await StartClusterAsync(nodes: 2);
        await using var client = await cluster.ConnectAsync();
        using var cts = Timeout();
        var job = await cluster.Admin(client).RegisterJobAsync("sealed", cts.Token);
        await using var metadata = await ConnectAsync(cluster.Metadata.EndPoint);
        var data = DataFor("sealed", Size);
        var (handle, grants) = await CreateAsync(metadata, job.Token, "k", Size);
        await WriteAllAsync(cluster, grants, data, Status.Ok);

        // Before Commit the write grant may write again (a retried write), and reading with it seals nothing.
        Assert.Equal(data.AsSpan(0, grants[0].Length).ToArray(), (await ReadAsync(cluster, grants[0])).Bytes);
        await WriteAllAsync(cluster, grants, data, Status.Ok);
        await SendAsync(metadata, Opcode.Commit, job.Token, b => CommitRequest.Write(b, handle, Size));

        // The first read after Commit seals, whether or not the metadata server's seal arrived yet: after it, never.
        Assert.Equal(Hash(data), Hash(await job.GetAsync("k", cancellationToken: cts.Token)));
        await WriteAllAsync(cluster, grants, DataFor("overwrite", Size), Status.StaleGrant);
        Assert.Equal(Hash(data), Hash(await job.GetAsync("k", cancellationToken: cts.Token)));

        // The same grant still reads (it carries read rights too): sealing stops writes only.
        var (status, bytes) = await ReadAsync(cluster, grants[0]);
        Assert.Equal(Status.Ok, status);
        Assert.Equal(data.AsSpan(0, grants[0].Length).ToArray(), bytes);
    }

    [Fact]
    public async Task TheMetadataServersSealReachesTheNodesAfterCommitWithoutAnyRead()
    {
        await using var cluster = await StartClusterAsync(nodes: 2);
        await using var client = await cluster.ConnectAsync();
        using var cts = Timeout();
        var job = await cluster.Admin(client).RegisterJobAsync("unread", cts.Token);
        await using var metadata = await ConnectAsync(cluster.Metadata.EndPoint);
        var data = DataFor("unread", Size);
        var (handle, grants) = await CreateAsync(metadata, job.Token, "k", Size);
        await WriteAllAsync(cluster, grants, data, Status.Ok);
        await SendAsync(metadata, Opcode.Commit, job.Token, b => CommitRequest.Write(b, handle, Size));

        // Commit does not wait for the seal; nobody reads, so only the seal can stop the write grants. Rewriting the
        // same bytes keeps the object intact while we wait for it.
        foreach (var grant in grants)
        {
            var slice = data.AsMemory(grants.TakeWhile(g => g != grant).Sum(g => g.Length), grant.Length);
            while (await WriteAsync(cluster, grant, slice) == Status.Ok)
            {
                await Task.Delay(10, cts.Token);
            }

            Assert.Equal(Status.StaleGrant, await WriteAsync(cluster, grant, slice));
        }

        Assert.Equal(Hash(data), Hash(await job.GetAsync("k", cancellationToken: cts.Token)));
    }

    [Fact]
    public async Task AReadOnlyGrantSealsItsExtentOnTheNode()
    {
        await using var cluster = await StartClusterAsync(nodes: 1);
        await using var client = await cluster.ConnectAsync();
        using var cts = Timeout();
        var job = await cluster.Admin(client).RegisterJobAsync("readseals", cts.Token);
        await using var metadata = await ConnectAsync(cluster.Metadata.EndPoint);
        var data = DataFor("readseals", 200_000);
        var (handle, grants) = await CreateAsync(metadata, job.Token, "k", data.Length);
        var grant = Assert.Single(grants);
        Assert.Equal(Status.Ok, await WriteAsync(cluster, grant, data));

        // Read-only grants are only issued for committed objects; the node takes one as proof of the commit. Made here
        // by hand before Commit (with the node's secret), so that no seal from the metadata server can be what stops
        // the write grant.
        var readOnly = grant.WithRights(NodeOf(cluster, grant).GrantSecret, GrantRights.Read);
        Assert.Equal(Status.Ok, await WriteAsync(cluster, grant, data));
        Assert.Equal(data, (await ReadAsync(cluster, readOnly)).Bytes);
        Assert.Equal(Status.StaleGrant, await WriteAsync(cluster, grant, DataFor("late", data.Length)));
        Assert.Equal(data, (await ReadAsync(cluster, grant)).Bytes);

        await SendAsync(metadata, Opcode.Commit, job.Token, b => CommitRequest.Write(b, handle, data.Length));
        Assert.Equal(Hash(data), Hash(await job.GetAsync("k", cancellationToken: cts.Token)));
    }

    [Fact]
    public async Task AWriteGrantIsStaleAfterAbortWrittenOrNot()
    {
        await using var cluster = await StartClusterAsync(nodes: 2);
        await using var client = await cluster.ConnectAsync();
        using var cts = Timeout();
        var job = await cluster.Admin(client).RegisterJobAsync("aborted", cts.Token);
        await using var metadata = await ConnectAsync(cluster.Metadata.EndPoint);
        var (handle, grants) = await CreateAsync(metadata, job.Token, "k", Size);

        // Only the first extent is written; the rest never are.
        var data = DataFor("aborted", Size);
        Assert.Equal(Status.Ok, await WriteAsync(cluster, grants[0], data.AsMemory(0, grants[0].Length)));
        await SendAsync(metadata, Opcode.Abort, job.Token, b => AbortRequest.Write(b, handle));

        await WriteAllAsync(cluster, grants, data, Status.StaleGrant);
        Assert.Equal(Status.StaleGrant, (await ReadAsync(cluster, grants[0])).Status);
        await Assert.ThrowsAsync<ObjectNotFoundException>(() => job.GetAsync("k", cancellationToken: cts.Token).AsTask());
    }

    [Fact]
    public async Task ReadAndWriteGrantsFailAfterDelete()
    {
        await using var cluster = await StartClusterAsync(nodes: 2);
        await using var client = await cluster.ConnectAsync();
        using var cts = Timeout();
        var job = await cluster.Admin(client).RegisterJobAsync("deleted", cts.Token);
        await using var metadata = await ConnectAsync(cluster.Metadata.EndPoint);
        var data = DataFor("deleted", Size);
        var (handle, writeGrants) = await CreateAsync(metadata, job.Token, "k", Size);
        await WriteAllAsync(cluster, writeGrants, data, Status.Ok);
        await SendAsync(metadata, Opcode.Commit, job.Token, b => CommitRequest.Write(b, handle, Size));
        var readGrants = await GetGrantsAsync(metadata, job.Token, "k", FrameFlags.None);
        Assert.Equal(Status.Ok, (await ReadAsync(cluster, readGrants[0])).Status);

        await job.DeleteAsync("k", cancellationToken: cts.Token);

        // The reply to Delete came after the nodes forgot the space: nothing of the old generation works any more.
        foreach (var grant in readGrants.Concat(writeGrants))
        {
            Assert.Equal(Status.StaleGrant, (await ReadAsync(cluster, grant)).Status);
        }

        await WriteAllAsync(cluster, writeGrants, data, Status.StaleGrant);

        // The space itself is free for the next object.
        var next = DataFor("next", Size);
        await job.PutAsync("k2", next, cancellationToken: cts.Token);
        Assert.Equal(Hash(next), Hash(await job.GetAsync("k2", cancellationToken: cts.Token)));
    }

    [Fact]
    public async Task ADeleteAfterReadsGrantsWorkUntilTheReaderReleasesThem()
    {
        await using var cluster = await StartClusterAsync(nodes: 2);
        await using var client = await cluster.ConnectAsync();
        using var cts = Timeout();
        var job = await cluster.Admin(client).RegisterJobAsync("dar", cts.Token);
        var data = DataFor("dar", Size);
        await job.PutAsync("k", data, cancellationToken: cts.Token);
        await using var metadata = await ConnectAsync(cluster.Metadata.EndPoint);

        var body = new BodyWriter();
        GetRequest.Write(body, "k", 0, -1);
        var reply = await metadata.SendAsync(Opcode.Get, FrameFlags.DeleteAfterRead, job.Token, body.WrittenMemory);
        Assert.True(reply.IsOk, reply.Message);
        var (grants, release) = ParseGet(reply.Body);

        var (status, bytes) = await ReadAsync(cluster, grants[0]);
        Assert.Equal(Status.Ok, status);
        Assert.Equal(data.AsSpan(0, grants[0].Length).ToArray(), bytes);

        await SendAsync(metadata, Opcode.Abort, job.Token, b => AbortRequest.Write(b, release));
        foreach (var grant in grants)
        {
            Assert.Equal(Status.StaleGrant, (await ReadAsync(cluster, grant)).Status);
        }
    }

    [Fact]
    public async Task AnExpiredGrantIsRefusedByTheNodesClock()
    {
        // The node's clock is fake; the metadata server's is real (a node timeout of minutes, as the node's heartbeats
        // only tick when its clock is moved).
        await using var cluster = await StartClusterAsync(nodes: 0);
        var time = new FakeTimeProvider(DateTimeOffset.UtcNow);
        await using var node = new StorageServer.StorageServer(
            new StorageServerOptions
            {
                Metadata = new DnsEndPoint("127.0.0.1", cluster.Metadata.EndPoint.Port),
                Capacity = 64L << 20,
                ClusterToken = cluster.Options.ClusterToken,
                TimeProvider = time,
                Listener = new FrameServerOptions { EndPoint = new IPEndPoint(IPAddress.Loopback, 0) },
            },
            NullLoggerFactory.Instance);
        await node.StartAsync();
        await using var client = await cluster.ConnectAsync();
        using var cts = Timeout();
        var job = await cluster.Admin(client).RegisterJobAsync("expiry", cts.Token);
        await using var metadata = await ConnectAsync(cluster.Metadata.EndPoint);
        var (_, grants) = await CreateAsync(metadata, job.Token, "k", 200_000);
        var grant = grants[0];
        var data = DataFor("expiry", grant.Length);

        async Task<Status> WriteToNodeAsync()
        {
            await using var connection = await ConnectAsync(node.EndPoint);
            var head = new BodyWriter();
            WriteExtentRequest.Write(head, grant, 0);
            return (await connection.SendAsync(Opcode.WriteExtent, FrameFlags.None, JobToken.None, head.WrittenMemory, data)).Status;
        }

        Assert.Equal(Status.Ok, await WriteToNodeAsync());

        // Valid through its lifetime and the clock-skew allowance; refused just after.
        var expires = DateTimeOffset.FromUnixTimeMilliseconds(grant.Expires);
        Assert.InRange(expires - DateTimeOffset.UtcNow, TimeSpan.FromMinutes(14), TimeSpan.FromMinutes(16));
        time.SetUtcNow(expires + new StorageServerOptions { Metadata = new DnsEndPoint("x", 1) }.GrantClockSkew);
        Assert.Equal(Status.Ok, await WriteToNodeAsync());
        time.Advance(TimeSpan.FromMilliseconds(1));
        Assert.Equal(Status.StaleGrant, await WriteToNodeAsync());
    }

    [Fact]
    public async Task AForgedSealOrForgetChangesNothing()
    {
        await using var cluster = await StartClusterAsync(nodes: 1);
        await using var client = await cluster.ConnectAsync();
        using var cts = Timeout();
        var job = await cluster.Admin(client).RegisterJobAsync("forged", cts.Token);
        await using var metadata = await ConnectAsync(cluster.Metadata.EndPoint);
        var data = DataFor("forged", 200_000);
        var (handle, grants) = await CreateAsync(metadata, job.Token, "k", data.Length);
        var grant = Assert.Single(grants);
        Assert.Equal(Status.Ok, await WriteAsync(cluster, grant, data));

        var node = cluster.Nodes[0]!;
        await using var connection = await ConnectAsync(node.EndPoint);
        Revocation[] revocations = [new(RevocationKind.Seal, grant.Generation, grant.Offset, grant.Length), new(RevocationKind.Forget, grant.Generation, grant.Offset, grant.Length)];
        async Task<Status> RevokeAsync(byte[] secret, uint nodeId, JobToken token, Func<byte[], byte[]>? damage = null)
        {
            var body = new BodyWriter();
            RevokeExtentsRequest.Write(body, secret, nodeId, revocations);
            var bytes = damage?.Invoke(body.ToArray()) ?? body.ToArray();
            return (await connection.SendAsync(Opcode.RevokeExtents, FrameFlags.None, token, bytes)).Status;
        }

        // A guessed secret, with no token or even the cluster token; a MAC cut short; a garbage body.
        Assert.Equal(Status.Unauthorized, await RevokeAsync(new byte[32], node.NodeId, JobToken.None));
        Assert.Equal(Status.Unauthorized, await RevokeAsync(new byte[32], node.NodeId, cluster.Options.ClusterToken));
        Assert.Equal(Status.BadRequest, await RevokeAsync(new byte[32], node.NodeId, JobToken.None, b => b[..^1]));
        Assert.Equal(Status.BadRequest, (await connection.SendAsync(Opcode.RevokeExtents, FrameFlags.None, JobToken.None, new byte[] { 1, 2, 3 })).Status);

        // Nothing was sealed or forgotten: the write grant still writes and reads, and the object commits intact.
        Assert.Equal(Status.Ok, await WriteAsync(cluster, grant, data));
        Assert.Equal(data, (await ReadAsync(cluster, grant)).Bytes);
        await SendAsync(metadata, Opcode.Commit, job.Token, b => CommitRequest.Write(b, handle, data.Length));
        Assert.Equal(Hash(data), Hash(await job.GetAsync("k", cancellationToken: cts.Token)));
        Assert.Equal(Status.StaleGrant, await WriteAsync(cluster, grant, data));
    }

    private static Task<FrameConnection> ConnectAsync(IPEndPoint endPoint) =>
        FrameConnection.ConnectAsync("127.0.0.1", endPoint.Port, new FrameConnectionOptions());

    private static async Task SendAsync(FrameConnection metadata, Opcode opcode, JobToken token, Action<BodyWriter> write)
    {
        var body = new BodyWriter();
        write(body);
        var reply = await metadata.SendAsync(opcode, FrameFlags.None, token, body.WrittenMemory);
        Assert.True(reply.IsOk, $"{opcode}: {reply.Message}");
    }

    private static async Task<(ulong Handle, List<ExtentGrant> Grants)> CreateAsync(FrameConnection metadata, JobToken token, string key, long size)
    {
        var body = new BodyWriter();
        CreateRequest.Write(body, key, size);
        var reply = await metadata.SendAsync(Opcode.Create, FrameFlags.None, token, body.WrittenMemory);
        Assert.True(reply.IsOk, reply.Message);
        return ParseCreate(reply.Body);
    }

    private static (ulong Handle, List<ExtentGrant> Grants) ParseCreate(byte[] body)
    {
        Assert.True(CreateReply.TryRead(body, out var created));
        return (created.Handle, ToList(created.Grants));
    }

    private static (List<ExtentGrant> Grants, ulong Release) ParseGet(byte[] body)
    {
        Assert.True(GetReply.TryRead(body, out var got));
        return (ToList(got.Grants), got.Release);
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

    private static async Task<List<ExtentGrant>> GetGrantsAsync(FrameConnection metadata, JobToken token, string key, FrameFlags flags)
    {
        var body = new BodyWriter();
        GetRequest.Write(body, key, 0, -1);
        var reply = await metadata.SendAsync(Opcode.Get, flags, token, body.WrittenMemory);
        Assert.True(reply.IsOk, reply.Message);
        return ParseGet(reply.Body).Grants;
    }

    private static StorageServer.StorageServer NodeOf(PocketCluster cluster, ExtentGrant grant) => cluster.Nodes.Single(n => n?.NodeId == grant.NodeId)!;

    private static async Task<Status> WriteAsync(PocketCluster cluster, ExtentGrant grant, ReadOnlyMemory<byte> data)
    {
        await using var connection = await ConnectAsync(NodeOf(cluster, grant).EndPoint);
        var head = new BodyWriter();
        WriteExtentRequest.Write(head, grant, 0);
        return (await connection.SendAsync(Opcode.WriteExtent, FrameFlags.None, JobToken.None, head.WrittenMemory, data)).Status;
    }

    /// <summary>Writes each grant's slice of <paramref name="data"/> and expects <paramref name="expected"/> of each.</summary>
    private static async Task WriteAllAsync(PocketCluster cluster, List<ExtentGrant> grants, byte[] data, Status expected)
    {
        var at = 0;
        foreach (var grant in grants)
        {
            var length = Math.Min(grant.Length, data.Length - at);
            Assert.Equal(expected, await WriteAsync(cluster, grant, data.AsMemory(at, length)));
            at += length;
        }
    }

    private static async Task<(Status Status, byte[] Bytes)> ReadAsync(PocketCluster cluster, ExtentGrant grant)
    {
        await using var connection = await ConnectAsync(NodeOf(cluster, grant).EndPoint);
        var head = new BodyWriter();
        ReadExtentRequest.Write(head, grant, 0, grant.Length);
        var into = new byte[grant.Length];
        var reply = await connection.SendAsync(Opcode.ReadExtent, FrameFlags.None, JobToken.None, head.WrittenMemory, replyInto: into);
        return (reply.Status, reply.IsOk ? into[..reply.DataLength] : []);
    }
}
