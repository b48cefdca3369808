using System.Net;
using System.Net.Sockets;
using Pocket.Admin;
using Pocket.Client;
using Pocket.Embedded;
using Pocket.Networking;
using Pocket.Protocol;
using static Pocket.Tests.TestSupport;

namespace Pocket.Tests;

/// <summary>
/// Garbage, truncated frames, oversize lengths, unknown opcodes, wrong versions and bad tokens, sent to both
/// server roles over raw sockets: each gets an error reply or a closed connection, the server keeps serving,
/// and data stored before is unchanged.
/// </summary>
public sealed class BadInputTests
{
    public static TheoryData<string> Servers => ["metadata", "storage"];

    private static IPEndPoint EndPointOf(PocketCluster cluster, string server) =>
        server == "metadata" ? cluster.Metadata.EndPoint : cluster.Nodes[0]!.EndPoint;

    /// <summary>Objects of every kind stored before the abuse starts, with their checksums.</summary>
    private static async Task<Dictionary<string, string>> StoreBaselineAsync(PocketJob job, CancellationToken cancellationToken)
    {
        var stored = new Dictionary<string, string>();
        foreach (var (key, size) in new[] { ("inline", 1_000), ("one-block", 40_000), ("striped", (6 << 20) + 5) })
        {
            var data = DataFor(key, size);
            await job.PutAsync(key, data, cancellationToken: cancellationToken);
            stored[key] = Hash(data);
        }

        return stored;
    }

    private static async Task AssertStillServingAsync(PocketCluster cluster, PocketJob job, Dictionary<string, string> stored)
    {
        using var cts = Timeout();
        foreach (var (storedKey, hash) in stored)
        {
            Assert.Equal(hash, Hash(await job.GetAsync(storedKey, cancellationToken: cts.Token)));
        }

        // A fresh client, fresh connections: put and get still work on every node.
        await using var client = await cluster.ConnectAsync(cancellationToken: cts.Token);
        var fresh = client.OpenJob(job.Id, job.Token);
        var key = $"after/{Guid.NewGuid():N}";
        var data = DataFor(key, 5 << 20);
        await fresh.PutAsync(key, data, cancellationToken: cts.Token);
        Assert.Equal(Hash(data), Hash(await fresh.GetAsync(key, cancellationToken: cts.Token)));
        await fresh.DeleteAsync(key, cancellationToken: cts.Token);
        Assert.Equal(stored.Count, await fresh.CountAsync(cancellationToken: cts.Token));
    }

    private static async Task<(PocketCluster Cluster, PocketClient Client, PocketJob Job, Dictionary<string, string> Stored)> SetUpAsync()
    {
        var cluster = await StartClusterAsync(nodes: 2);
        var client = await cluster.ConnectAsync();
        using var cts = Timeout();
        var job = await cluster.Admin(client).RegisterJobAsync("victim", cts.Token);
        var stored = await StoreBaselineAsync(job, cts.Token);
        return (cluster, client, job, stored);
    }

    [Theory]
    [MemberData(nameof(Servers))]
    public async Task RandomBytesGetAnErrorOrAClosedConnection(string server)
    {
        var (cluster, client, job, stored) = await SetUpAsync();
        await using var _ = cluster;
        await using var __ = client;
        var random = new Random(server.Length * 7919);
        for (var round = 0; round < 20; round++)
        {
            var garbage = new byte[random.Next(1, 8192)];
            random.NextBytes(garbage);
            if (round % 2 == 1)
            {
                // Half the rounds look like our protocol at first glance.
                garbage[0] = FrameHeader.CurrentVersion;
            }

            using var socket = await ConnectRawAsync(EndPointOf(cluster, server));
            await SendRawAsync(socket, garbage);
            socket.Shutdown(SocketShutdown.Send);

            // Whatever comes back is a well-formed reply frame, and the connection ends.
            var replies = 0;
            while (await ReadReplyAsync(socket) is { } reply)
            {
                Assert.True(reply.Header.IsReply);
                replies++;
                Assert.True(replies < 10_000, "server keeps answering garbage forever");
            }
        }

        await AssertStillServingAsync(cluster, job, stored);
    }

    [Theory]
    [MemberData(nameof(Servers))]
    public async Task TruncatedFramesThenCloseLeaveTheServerServing(string server)
    {
        var (cluster, client, job, stored) = await SetUpAsync();
        await using var _ = cluster;
        await using var __ = client;
        var endPoint = EndPointOf(cluster, server);
        var opcode = server == "metadata" ? Opcode.PutSmall : Opcode.WriteExtent;

        // A header cut short, a body cut short, and a body cut short after a valid job token.
        byte[][] cases =
        [
            Header(opcode, 100)[..10],
            [.. Header(opcode, 100_000), .. new byte[5_000]],
            [.. Header(opcode, 64, token: job.Token), .. new byte[10]],
        ];
        foreach (var bytes in cases)
        {
            using var socket = await ConnectRawAsync(endPoint);
            await SendRawAsync(socket, bytes);
            socket.Shutdown(SocketShutdown.Send);
            while (await ReadReplyAsync(socket) is { } reply)
            {
                Assert.NotEqual(Status.Ok, reply.Header.Status);
            }
        }

        await AssertStillServingAsync(cluster, job, stored);
    }

    [Theory]
    [MemberData(nameof(Servers))]
    public async Task OversizeLengthsAreRefusedAndTheConnectionClosed(string server)
    {
        var (cluster, client, job, stored) = await SetUpAsync();
        await using var _ = cluster;
        await using var __ = client;
        var limits = ProtocolLimits.Default;
        var cases = new List<(Opcode Opcode, int Length)>
        {
            (Opcode.Ping, limits.MaxControlBody + 1),
            (Opcode.ReadExtent, int.MaxValue),
            (Opcode.Get, -1),
            ((Opcode)200, limits.MaxControlBody + 1),
            (Opcode.WriteExtent, limits.MaxDataBody + 1),
        };
        foreach (var (opcode, length) in cases)
        {
            using var socket = await ConnectRawAsync(EndPointOf(cluster, server));
            await SendRawAsync(socket, Header(opcode, length, requestId: 4242));
            var reply = await ReadReplyAsync(socket);
            Assert.NotNull(reply);
            Assert.Equal(Status.FrameTooLarge, reply.Value.Header.Status);
            Assert.Equal(4242u, reply.Value.Header.RequestId);
            Assert.True(await IsClosedAsync(socket), "the frame boundary is lost, so the server must close");
        }

        await AssertStillServingAsync(cluster, job, stored);
    }

    [Theory]
    [MemberData(nameof(Servers))]
    public async Task UnknownOpcodesAreAnsweredAndTheConnectionKeepsWorking(string server)
    {
        var (cluster, client, job, stored) = await SetUpAsync();
        await using var _ = cluster;
        await using var __ = client;
        using var socket = await ConnectRawAsync(EndPointOf(cluster, server));
        var other = server == "metadata" ? Opcode.WriteExtent : Opcode.Lookup;
        uint id = 0;
        // Numbers no version has used yet (checked, as new opcodes are appended), and the other role's opcode.
        var unknown = new byte[] { 0, 19, 99, 200, 255 }.Select(b => (Opcode)b).Where(o => !Enum.IsDefined(o)).ToList();
        Assert.True(unknown.Count >= 3);
        foreach (var opcode in unknown.Append(other))
        {
            // A body comes along; the server must skip it to find the next frame.
            var body = RandomBytes(300, (int)opcode);
            await SendRawAsync(socket, [.. Header(opcode, body.Length, requestId: ++id, token: job.Token), .. body]);
            var reply = await ReadReplyAsync(socket);
            Assert.NotNull(reply);
            Assert.Equal(id, reply.Value.Header.RequestId);
            Assert.Equal(Status.UnknownOpcode, reply.Value.Header.Status);

            await SendRawAsync(socket, Header(Opcode.Ping, 0, requestId: ++id));
            var pong = await ReadReplyAsync(socket);
            Assert.NotNull(pong);
            Assert.Equal(Status.Ok, pong.Value.Header.Status);
            Assert.Equal(id, pong.Value.Header.RequestId);
        }

        await AssertStillServingAsync(cluster, job, stored);
    }

    [Theory]
    [MemberData(nameof(Servers))]
    public async Task WrongVersionsReplyFlagsAndReservedBitsCloseTheConnection(string server)
    {
        var (cluster, client, job, stored) = await SetUpAsync();
        await using var _ = cluster;
        await using var __ = client;
        var cases = new (byte[] Bytes, Status Expected)[]
        {
            (Header(Opcode.Ping, 0, version: 0), Status.VersionMismatch),
            (Header(Opcode.Ping, 0, version: 2), Status.VersionMismatch),
            (Header(Opcode.Ping, 0, version: 255), Status.VersionMismatch),
            (Header(Opcode.Ping, 0, flags: FrameFlags.Reply), Status.BadRequest),
            (Header(Opcode.Ping, 0, reserved: 1), Status.BadRequest),
        };
        foreach (var (bytes, expected) in cases)
        {
            using var socket = await ConnectRawAsync(EndPointOf(cluster, server));
            await SendRawAsync(socket, bytes);
            var reply = await ReadReplyAsync(socket);
            Assert.NotNull(reply);
            Assert.Equal(expected, reply.Value.Header.Status);
            Assert.True(await IsClosedAsync(socket));
        }

        await AssertStillServingAsync(cluster, job, stored);
    }

    [Fact]
    public async Task MetadataRefusesUnknownJobTokens()
    {
        var (cluster, client, job, stored) = await SetUpAsync();
        await using var _ = cluster;
        await using var __ = client;
        using var socket = await ConnectRawAsync(cluster.Metadata.EndPoint);
        uint id = 0;
        foreach (var opcode in new[] { Opcode.PutSmall, Opcode.Get, Opcode.Create, Opcode.Allocate, Opcode.Commit, Opcode.Abort, Opcode.Lookup, Opcode.Delete, Opcode.List, Opcode.Count })
        {
            foreach (var token in new[] { JobToken.None, JobToken.NewRandom() })
            {
                var body = new BodyWriter().Str("inline").I64(0).I64(-1).ToArray();
                await SendRawAsync(socket, [.. Header(opcode, body.Length, requestId: ++id, token: token), .. body]);
                var reply = await ReadReplyAsync(socket);
                Assert.NotNull(reply);
                Assert.Equal(Status.Unauthorized, reply.Value.Header.Status);
                Assert.Equal(id, reply.Value.Header.RequestId);
            }
        }

        // Listing nodes needs a live job's token or the cluster token.
        foreach (var token in new[] { JobToken.None, JobToken.NewRandom() })
        {
            await SendRawAsync(socket, [.. Header(Opcode.ListNodes, 0, requestId: ++id, token: token)]);
            var reply = await ReadReplyAsync(socket);
            Assert.Equal(Status.Unauthorized, reply!.Value.Header.Status);
        }

        foreach (var token in new[] { job.Token, cluster.Options.ClusterToken })
        {
            await SendRawAsync(socket, [.. Header(Opcode.ListNodes, 0, requestId: ++id, token: token)]);
            var reply = await ReadReplyAsync(socket);
            Assert.Equal(Status.Ok, reply!.Value.Header.Status);
        }

        // Administration needs the cluster token, not a job's.
        foreach (var (opcode, body) in new[] { (Opcode.RegisterJob, new BodyWriter().Str("intruder").ToArray()), (Opcode.DeregisterJob, new BodyWriter().Str(job.Id).ToArray()) })
        {
            await SendRawAsync(socket, [.. Header(opcode, body.Length, requestId: ++id, token: job.Token), .. body]);
            var reply = await ReadReplyAsync(socket);
            Assert.Equal(Status.Unauthorized, reply!.Value.Header.Status);
        }

        await AssertStillServingAsync(cluster, job, stored);
    }

    [Fact]
    public async Task StorageRefusesForgedAndMisusedGrants()
    {
        var (cluster, client, job, stored) = await SetUpAsync();
        await using var _ = cluster;
        await using var __ = client;
        var node = cluster.Nodes[0]!;
        using var socket = await ConnectRawAsync(node.EndPoint);
        uint id = 0;

        async Task<Status> SendAsync(Opcode opcode, ExtentGrant grant, int within, byte[] tail)
        {
            var head = new byte[ExtentGrant.Size];
            grant.Write(head);
            var body = new BodyWriter().Bytes(head).I32(within).Bytes(tail).ToArray();
            await SendRawAsync(socket, [.. Header(opcode, body.Length, requestId: ++id, token: JobToken.NewRandom()), .. body]);
            var reply = await ReadReplyAsync(socket);
            Assert.NotNull(reply);
            Assert.Equal(id, reply.Value.Header.RequestId);
            return reply.Value.Header.Status;
        }

        // A grant signed with a guessed secret, for the node's id and a real extent.
        var forged = ExtentGrant.Sign(new byte[32], node.NodeId, 1, 0, 64 << 10, GrantRights.Read | GrantRights.Write, DateTimeOffset.UtcNow.AddHours(1).ToUnixTimeMilliseconds());
        Assert.Equal(Status.Unauthorized, await SendAsync(Opcode.ReadExtent, forged, 0, new BodyWriter().I32(100).ToArray()));
        Assert.Equal(Status.Unauthorized, await SendAsync(Opcode.WriteExtent, forged, 0, new byte[4096]));

        // A real signature with one field changed no longer verifies.
        var tampered = forged with { Length = 1 << 20 };
        Assert.Equal(Status.Unauthorized, await SendAsync(Opcode.ReadExtent, tampered, 0, new BodyWriter().I32(100).ToArray()));

        // Every truncation of a read body, and write bodies too short for grant and offset.
        var readBody = new byte[ExtentGrant.Size + 8];
        forged.Write(readBody);
        for (var n = 0; n <= readBody.Length + 1; n++)
        {
            if (n == readBody.Length)
            {
                continue;
            }

            var bytes = n <= readBody.Length ? readBody[..n] : [.. readBody, 0];
            await SendRawAsync(socket, [.. Header(Opcode.ReadExtent, bytes.Length, requestId: ++id), .. bytes]);
            var reply = (await ReadReplyAsync(socket))!.Value;
            Assert.True(reply.Header.Status == Status.BadRequest, $"read body of {n} bytes: {reply.Header.Status}");
        }

        for (var n = 0; n < ExtentGrant.Size + 4; n++)
        {
            await SendRawAsync(socket, [.. Header(Opcode.WriteExtent, n, requestId: ++id), .. readBody[..n]]);
            Assert.Equal(Status.BadRequest, (await ReadReplyAsync(socket))!.Value.Header.Status);
        }

        await SendRawAsync(socket, Header(Opcode.Ping, 0, requestId: ++id));
        Assert.Equal(Status.Ok, (await ReadReplyAsync(socket))!.Value.Header.Status);
        await AssertStillServingAsync(cluster, job, stored);
    }

    /// <summary>A valid body for every metadata opcode that takes one, and the token it runs under.</summary>
    public static TheoryData<string> MetadataOpcodes =>
    [
        nameof(Opcode.RegisterNode), nameof(Opcode.Heartbeat), nameof(Opcode.RegisterJob), nameof(Opcode.DeregisterJob),
        nameof(Opcode.SetWeights), nameof(Opcode.JobStats), nameof(Opcode.PutSmall), nameof(Opcode.Get), nameof(Opcode.Create),
        nameof(Opcode.Allocate), nameof(Opcode.Commit), nameof(Opcode.Abort), nameof(Opcode.Lookup), nameof(Opcode.Delete),
        nameof(Opcode.List), nameof(Opcode.Count),
    ];

    [Theory]
    [MemberData(nameof(MetadataOpcodes))]
    public async Task MalformedMetadataBodiesGetBadRequestAndTheConnectionKeepsWorking(string name)
    {
        var (cluster, client, job, stored) = await SetUpAsync();
        await using var _ = cluster;
        await using var __ = client;
        var opcode = Enum.Parse<Opcode>(name);
        var admin = opcode is Opcode.RegisterNode or Opcode.Heartbeat or Opcode.RegisterJob or Opcode.DeregisterJob or Opcode.SetWeights;
        var token = admin ? cluster.Options.ClusterToken : job.Token;
        var body = opcode switch
        {
            Opcode.RegisterNode => new BodyWriter().U8((byte)NodeTier.Dram).Str("127.0.0.1").U16(9).I64(1 << 20).I32(64 << 10).Bytes(new byte[32]),
            Opcode.Heartbeat => new BodyWriter().U32(1).F64(0.5).F64(1).F64(2).I64(3),
            Opcode.RegisterJob => new BodyWriter().Str("job-name"),
            Opcode.DeregisterJob => new BodyWriter().Str(job.Id),
            Opcode.SetWeights => new BodyWriter().Str(job.Id).U32(1).U32(1).F64(1.0),
            Opcode.JobStats => new BodyWriter().Str(job.Id),
            Opcode.PutSmall => new BodyWriter().Str("new/key").Blob([1, 2, 3]),
            Opcode.Get => new BodyWriter().Str("inline").I64(0).I64(-1),
            Opcode.Create => new BodyWriter().Str("new/key").I64(100_000),
            Opcode.Allocate => new BodyWriter().U64(1).I64(100_000),
            Opcode.Commit => new BodyWriter().U64(1).I64(0),
            Opcode.Abort => new BodyWriter().U64(1),
            Opcode.Lookup => new BodyWriter().Str("inline"),
            Opcode.Delete => new BodyWriter().Str("inline"),
            Opcode.List => new BodyWriter().Str("").Str("").I32(10).U8(0),
            Opcode.Count => new BodyWriter().Str(""),
            _ => throw new ArgumentOutOfRangeException(name),
        };
        var full = body.ToArray();

        using var cts = Timeout();
        await using var connection = await FrameConnection.ConnectAsync("127.0.0.1", cluster.Metadata.EndPoint.Port, new FrameConnectionOptions(), cts.Token);
        var malformed = Enumerable.Range(0, full.Length).Select(n => full[..n]).Append([.. full, 0x5A]).ToList();
        foreach (var bytes in malformed)
        {
            var reply = await connection.SendAsync(opcode, FrameFlags.None, token, bytes, cancellationToken: cts.Token).AsTask().WaitAsync(cts.Token);
            Assert.True(reply.Status == Status.BadRequest, $"{name} with {bytes.Length} of {full.Length} body bytes: {reply.Status} {reply.Message}");
            var ping = await connection.SendAsync(Opcode.Ping, FrameFlags.None, JobToken.None, default, cancellationToken: cts.Token).AsTask().WaitAsync(cts.Token);
            Assert.Equal(Status.Ok, ping.Status);
        }

        Assert.True(connection.IsConnected);

        // Nothing was half-done by any of them.
        var nodes = await cluster.Admin(client).GetNodesAsync(cts.Token);
        Assert.Equal(2, nodes.Count);
        Assert.Equal(stored.Count, await job.CountAsync(cancellationToken: cts.Token));
        await AssertStillServingAsync(cluster, job, stored);
    }

    [Fact]
    public async Task InvalidKeysAreRefused()
    {
        var (cluster, client, job, stored) = await SetUpAsync();
        await using var _ = cluster;
        await using var __ = client;
        using var cts = Timeout();
        var used = await UsedAsync(cluster.Admin(client));
        var longKey = string.Join('/', Enumerable.Repeat("x", 65));
        foreach (var key in new[] { "", "/a", "a/", "a//b", "./a", "a/../b", "a/.", "tab\tkey", new string('k', 1025), longKey })
        {
            var small = await Assert.ThrowsAnyAsync<PocketException>(async () => await job.PutAsync(key, new byte[10], cancellationToken: cts.Token));
            Assert.Equal(Status.InvalidKey, small.Status);
            var large = await Assert.ThrowsAnyAsync<PocketException>(async () => await job.PutAsync(key, new byte[100_000], cancellationToken: cts.Token));
            Assert.Equal(Status.InvalidKey, large.Status);
            var read = await Assert.ThrowsAnyAsync<PocketException>(async () => await job.GetAsync(key, cancellationToken: cts.Token));
            Assert.Equal(Status.InvalidKey, read.Status);
        }

        Assert.Equal(stored.Count, await job.CountAsync(cancellationToken: cts.Token));
        Assert.Equal(used, await UsedAsync(cluster.Admin(client)));
    }
}
