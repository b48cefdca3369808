using System.Net;
using System.Net.Sockets;
using CsCheck;
using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.Extensions.Time.Testing;
using Pocket.Admin;
using Pocket.Client;
using Pocket.Metadata;
using Pocket.Metadata.Nodes;
using Pocket.Networking;
using Pocket.Protocol;
using Pocket.Protocol.Messages;
using static Pocket.Tests.TestSupport;

namespace Pocket.Tests;

/// <summary>
/// A node serving several metadata servers proposes one id to all of them; one that a server declared dead (silent past
/// the node timeout) registers again there under that id, as a new record whose generations start after the dead
/// record's: what was stored under the dead record stays lost, its grants never work again, and new puts land on it.
/// </summary>
public sealed class NodeReregistrationTests
{
    private const int Block = 4096;
    private const uint ProposedId = NodeRegistry.FirstProposedId + 7;

    /// <summary>
    /// Random writes, deletes, deaths (timeout or closed connection) and re-registrations of one proposed id: no
    /// generation is ever issued twice for the id, objects written before a death stay lost after it (lookup and get
    /// say so), deleting them never frees a block of the new record, and the new record's free space is exactly its
    /// capacity less its own objects.
    /// </summary>
    [Fact]
    public void GenerationsOfAReregisteredNodeNeverRepeatAndItsDeadRecordsExtentsStayLost()
    {
        var step = Gen.Select(Gen.Int[0, 3], Gen.Int[1, 40_000], Gen.Int[0, 1000]);
        step.Array[1, 80].Sample(Run, iter: 300);

        static void Run((int Kind, int Size, int Pick)[] steps)
        {
            var time = new FakeTimeProvider();
            var options = new MetadataServerOptions { TimeProvider = time, StripeUnit = 4 * Block, HddExtent = 4 * Block, NodeTimeout = TimeSpan.FromSeconds(5), InlineCapacity = 0 };
            var state = new MetadataState(options, NullLogger.Instance, new Random(3));
            long connection = 1;
            Assert.True(Register(state, connection).IsOk);
            var job = state.RegisterJob("gen", JobToken.None, NodeTier.Dram).Value;
            var seen = new HashSet<uint>();
            var live = new List<string>();
            var lost = new List<string>();
            var dead = false;
            var key = 0;
            foreach (var (kind, size, pick) in steps)
            {
                switch (kind)
                {
                    case 0 when !dead:
                        var name = $"k{key++}";
                        var open = state.Create(job, name, size, FrameFlags.None, connectionId: 100);
                        if (!open.IsOk)
                        {
                            Assert.Equal(Status.CapacityExceeded, open.Status);
                            break;
                        }

                        foreach (var grant in open.Value.Extents)
                        {
                            Assert.True(seen.Add(grant.Generation), $"generation {grant.Generation} issued twice");
                        }

                        Assert.True(state.Commit(job, open.Value.Handle, size).IsOk);
                        live.Add(name);
                        break;
                    case 1 when live.Count + lost.Count > 0:
                        var all = live.Concat(lost).ToList();
                        var victim = all[pick % all.Count];
                        Assert.True(state.Delete(job, victim, recursive: false).IsOk);
                        live.Remove(victim);
                        lost.Remove(victim);
                        break;
                    case 2 when !dead:
                        if (pick % 2 == 0)
                        {
                            time.Advance(TimeSpan.FromSeconds(6));
                            Assert.Single(state.CheckLiveness());
                        }
                        else
                        {
                            Assert.Single(state.ConnectionClosed(connection));
                        }

                        lost.AddRange(live);
                        live.Clear();
                        dead = true;
                        break;
                    case 3 when dead:
                        var again = Register(state, ++connection);
                        Assert.True(again.IsOk, again.Message);
                        dead = false;
                        break;
                    case 3 when !dead:
                        // A record that is not dead keeps its id.
                        Assert.Equal(Status.Exists, Register(state, connection + 1000).Status);
                        break;
                }

                Assert.True(state.Nodes.TryGet(ProposedId, out var node));
                foreach (var name in lost)
                {
                    Assert.Equal(Status.NodeLost, state.Get(job, name, 0, -1, deleteAfterRead: false, connectionId: 100).Status);
                    Assert.All(state.Lookup(job, name).Value.Extents, e => Assert.Equal(NodeState.Dead, e.NodeState));
                }

                if (!dead)
                {
                    var own = live.Sum(name => (long)state.Lookup(job, name).Value.Extents.Sum(e => ((e.Length + Block - 1) / Block) * (long)Block));
                    Assert.Equal(node.Capacity - own, node.FreeBytes);
                    foreach (var name in live)
                    {
                        Assert.True(state.Get(job, name, 0, -1, deleteAfterRead: false, connectionId: 100).IsOk);
                    }
                }
            }
        }

        static Result<NodeEntry> Register(MetadataState state, long connection)
        {
            var body = new BodyWriter();
            RegisterNodeRequest.Write(body, NodeTier.Dram, "127.0.0.1", 7000, 64L * Block, Block, new byte[RegisterNodeRequest.SecretSize], standby: false, ProposedId, RegisterNodeRequest.WholeNode);
            Assert.True(RegisterNodeRequest.TryRead(body.WrittenSpan, out var request));
            return state.RegisterNode(request, connection);
        }
    }

    /// <summary>
    /// Two real metadata servers and one real node serving both: the second server, on a fake clock, declares the node
    /// dead while the first hears it all along. The node registers with it again under its id, without restarting; the
    /// object stored there before is reported lost, a grant issued for it then is refused by the node, new puts succeed
    /// on the node, and the first server's job never notices.
    /// </summary>
    [Fact]
    public async Task ANodeDeclaredDeadByOneServerRegistersAgainUnderItsIdAndServesNewPuts()
    {
        var token = JobToken.NewRandom();
        var fake = new FakeTimeProvider(DateTimeOffset.UtcNow);
        await using var steady = await StartMetadataAsync(token, TimeProvider.System);
        await using var silent = await StartMetadataAsync(token, fake);
        await using var node = new Pocket.StorageServer.StorageServer(
            new Pocket.StorageServer.StorageServerOptions
            {
                Metadata = new DnsEndPoint("127.0.0.1", steady.EndPoint.Port),
                OtherMetadata = [new DnsEndPoint("127.0.0.1", silent.EndPoint.Port)],
                Capacity = 32L << 20,
                HeartbeatInterval = TimeSpan.FromMilliseconds(100),
                ClusterToken = token,
                DramHeadroom = 0,
                Listener = new FrameServerOptions { EndPoint = new IPEndPoint(IPAddress.Loopback, 0) },
            },
            NullLoggerFactory.Instance);
        await node.StartAsync();
        using var cts = Timeout();
        var options = new PocketClientOptions();
        await using var first = await PocketClient.ConnectAsync($"127.0.0.1:{steady.EndPoint.Port}", options, cts.Token);
        await using var second = await PocketClient.ConnectAsync($"127.0.0.1:{silent.EndPoint.Port}", options, cts.Token);
        var admin = second.Admin(token);
        var kept = await first.Admin(token).RegisterJobAsync("steady", cts.Token);
        var job = await admin.RegisterJobAsync("silent", cts.Token);
        var keptData = RandomBytes(3 << 20, 1);
        await kept.PutAsync("kept", keptData, cancellationToken: cts.Token);
        await job.PutAsync("before", RandomBytes(3 << 20, 2), cancellationToken: cts.Token);
        var oldGrant = await ReadGrantAsync(silent.EndPoint, job.Token, "before");
        Assert.Equal(Status.Ok, await ReadAsync(node.EndPoint, oldGrant));

        // The node's heartbeats keep coming in real time, so the fake clock is moved past the timeout until one
        // liveness check falls between two of them.
        var died = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        silent.NodeDied += (id, _) => died.TrySetResult();
        while (!died.Task.IsCompleted)
        {
            cts.Token.ThrowIfCancellationRequested();
            fake.Advance(TimeSpan.FromSeconds(6));
            await Task.WhenAny(died.Task, Task.Delay(50, cts.Token));
        }

        // It comes back under the same id, live, holding none of the dead record's blocks; the node never restarted.
        await WaitUntilAsync(async () => (await admin.GetNodesAsync(cts.Token)).SingleOrDefault() is { State: NodeState.Live, Used: 0, Capacity: > 0 } n && n.Id == node.NodeId, "the node registers again under its id");

        var lost = await Assert.ThrowsAsync<NodeLostException>(async () => await job.GetAsync("before", cancellationToken: cts.Token));
        Assert.Contains("'before'", lost.Message, StringComparison.Ordinal);
        Assert.NotEqual(Status.Ok, await ReadAsync(node.EndPoint, oldGrant));
        Assert.All((await job.LookupAsync("before", cts.Token))!.Blocks, b => Assert.Equal(NodeState.Dead, b.NodeState));

        var after = RandomBytes(3 << 20, 3);
        await job.PutAsync("after", after, cancellationToken: cts.Token);
        Assert.Equal(Hash(after), Hash(await job.GetAsync("after", cancellationToken: cts.Token)));
        Assert.All((await job.LookupAsync("after", cts.Token))!.Blocks, b => Assert.Equal(node.NodeId, b.NodeId));
        Assert.Equal(Hash(keptData), Hash(await kept.GetAsync("kept", cancellationToken: cts.Token)));

        // Deleting the lost object frees nothing of the new record's: the new object still reads.
        await job.DeleteAsync("before", cancellationToken: cts.Token);
        Assert.Equal(Hash(after), Hash(await job.GetAsync("after", cancellationToken: cts.Token)));
    }

    /// <summary>
    /// A metadata server that takes the connection but never answers the registration (a stalled process): the node
    /// starts without it, holds the whole node at the server that answers, keeps heartbeating that one, and asks the
    /// silent one again at later rounds, each time on a new connection after closing the last, asking for no segments;
    /// once the server answers, it gets its half by the balance rounds. Before, the node's start (and later every
    /// heartbeat round) waited for the registration's reply, up to the request timeout.
    /// </summary>
    [Fact]
    public async Task AServerThatNeverAnswersTheRegistrationHoldsUpNeitherTheStartNorTheOthersHeartbeats()
    {
        var token = JobToken.NewRandom();
        var fake = new FakeTimeProvider(DateTimeOffset.UtcNow);
        await using var steady = await StartMetadataAsync(token, fake);
        using var mute = new TcpListener(IPAddress.Loopback, 0);
        mute.Start();
        using var cts = Timeout(120);
        var registrations = System.Threading.Channels.Channel.CreateUnbounded<Socket>();
        var relayTo = 0;
        var accepting = Task.Run(async () =>
        {
            while (!cts.IsCancellationRequested)
            {
                var socket = await mute.AcceptSocketAsync(cts.Token);
                if (Volatile.Read(ref relayTo) is var port and not 0)
                {
                    _ = RelayAsync(socket, port, cts.Token);
                    continue;
                }

                var head = new byte[FrameHeader.Size];
                if (await ReadExactlyAsync(socket, head, cts.Token)
                    && FrameHeader.TryRead(head, int.MaxValue, out var header) == Status.Ok
                    && header.Opcode == Opcode.RegisterNode
                    && await ReadExactlyAsync(socket, new byte[header.BodyLength], cts.Token))
                {
                    registrations.Writer.TryWrite(socket);
                }
            }
        });

        const long Capacity = 32L << 20;
        // Its requests' own timeout is far beyond the test's patience: only the registration's bound can let the node go on.
        await using var node = PatientNode(steady.EndPoint.Port, ((IPEndPoint)mute.LocalEndpoint).Port, token, Capacity);
        await node.StartAsync().WaitAsync(cts.Token);

        await using var client = await PocketClient.ConnectAsync($"127.0.0.1:{steady.EndPoint.Port}", new PocketClientOptions(), cts.Token);
        var admin = client.Admin(token);
        await WaitUntilAsync(async () => (await admin.GetNodesAsync(cts.Token)).SingleOrDefault() is { State: NodeState.Live, Capacity: Capacity }, "the answering server holds the whole node");
        Assert.False(node.ServingAllMetadataServers.IsCompleted, "the node serves one of its two servers");

        // Three times: the steady server's clock moves past its suspect time (its liveness check marks the node suspect
        // at once), and a heartbeat arriving after that makes the node live again; meanwhile the silent server is asked
        // again, on a new connection, the old one closed by the node.
        var previous = await registrations.Reader.ReadAsync(cts.Token);
        for (var round = 0; round < 3; round++)
        {
            fake.Advance(TimeSpan.FromSeconds(4));
            await WaitUntilAsync(async () => (await admin.GetNodesAsync(cts.Token)).Single().State == NodeState.Live, "a heartbeat reaches the answering server");
            var next = await registrations.Reader.ReadAsync(cts.Token);
            Assert.True(await IsClosedAsync(previous), "the node closes an unanswered registration's connection");
            previous.Dispose();
            previous = next;
        }

        previous.Dispose();

        // The server answers from now on (its address relays to a real one): the node registers there with nothing up
        // front, and the balance rounds move free segments to it until the two hold half the node each.
        await using var late = await StartMetadataAsync(token, TimeProvider.System);
        Volatile.Write(ref relayTo, late.EndPoint.Port);
        await using var lateClient = await PocketClient.ConnectAsync($"127.0.0.1:{late.EndPoint.Port}", new PocketClientOptions(), cts.Token);
        var lateAdmin = lateClient.Admin(token);
        await node.ServingAllMetadataServers.WaitAsync(cts.Token);
        Assert.True((await lateAdmin.GetNodesAsync(cts.Token)).SingleOrDefault() is { State: NodeState.Live, Capacity: > 0 }, "once it says it serves both, the late server holds part of the node");
        await WaitUntilAsync(async () => (await lateAdmin.GetNodesAsync(cts.Token)).SingleOrDefault() is { State: NodeState.Live, Capacity: Capacity / 2 }, "the late server holds half the node");
        await WaitUntilAsync(async () => (await admin.GetNodesAsync(cts.Token)).Single().Capacity == Capacity / 2, "the answering server gave it half");

        foreach (var (server, name) in new[] { (admin, "steady"), (lateAdmin, "late") })
        {
            var job = await server.RegisterJobAsync(name, cts.Token);
            var data = RandomBytes(4 << 20, name.Length);
            await job.PutAsync("k", data, cancellationToken: cts.Token);
            Assert.Equal(Hash(data), Hash(await job.GetAsync("k", cancellationToken: cts.Token)));
        }

        await cts.CancelAsync();
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => accepting);

        static async Task RelayAsync(Socket inbound, int port, CancellationToken cancellationToken)
        {
            using var outbound = new Socket(SocketType.Stream, ProtocolType.Tcp) { NoDelay = true };
            inbound.NoDelay = true;
            await using var client = new NetworkStream(inbound, ownsSocket: true);
            try
            {
                await outbound.ConnectAsync(IPAddress.Loopback, port, cancellationToken);
                await using var server = new NetworkStream(outbound, ownsSocket: false);
                await Task.WhenAny(client.CopyToAsync(server, cancellationToken), server.CopyToAsync(client, cancellationToken));
            }
            catch (Exception ex) when (ex is IOException or SocketException or OperationCanceledException)
            {
            }
        }
    }

    private static async Task<MetadataServer> StartMetadataAsync(JobToken token, TimeProvider time)
    {
        var server = new MetadataServer(
            new MetadataServerOptions
            {
                ClusterToken = token,
                Listener = new FrameServerOptions { EndPoint = new IPEndPoint(IPAddress.Loopback, 0) },
                NodeTimeout = TimeSpan.FromSeconds(5),
                TimeProvider = time,
            },
            NullLoggerFactory.Instance);
        await server.StartAsync();
        return server;
    }

    private static async Task<ExtentGrant> ReadGrantAsync(IPEndPoint metadata, JobToken token, string key)
    {
        await using var connection = await FrameConnection.ConnectAsync("127.0.0.1", metadata.Port, new FrameConnectionOptions());
        var body = new BodyWriter();
        GetRequest.Write(body, key, 0, -1);
        var reply = await connection.SendAsync(Opcode.Get, FrameFlags.None, token, body.WrittenMemory);
        Assert.True(reply.IsOk, reply.Message);
        Assert.True(GetReply.TryRead(reply.Body, out var got));
        Assert.True(got.Grants.Count > 0);
        return got.Grants[0];
    }

    private static async Task<Status> ReadAsync(IPEndPoint node, ExtentGrant grant)
    {
        await using var connection = await FrameConnection.ConnectAsync("127.0.0.1", node.Port, new FrameConnectionOptions());
        var head = new BodyWriter();
        ReadExtentRequest.Write(head, grant, 0, grant.Length);
        var into = new byte[grant.Length];
        return (await connection.SendAsync(Opcode.ReadExtent, FrameFlags.None, JobToken.None, head.WrittenMemory, replyInto: into)).Status;
    }
}
