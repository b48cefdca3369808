using System.Net;
using System.Net.Sockets;
using Microsoft.Extensions.Logging.Abstractions;
using Pocket.Admin;
using Pocket.Client;
using Pocket.Metadata;
using Pocket.Networking;
using Pocket.Protocol;
using static Pocket.Tests.TestSupport;

namespace Pocket.Tests;

/// <summary>
/// A node's share moves wait for a server's answer only as long as a registration: a metadata server that stalls on a
/// ReleaseShare holds up neither the node's heartbeats to it nor the joining of another server, and its share stays
/// its own in the node's view (it may have carried the request out) until the answer comes; then the segments it gave
/// up go to the others. Before, the round waited for the answer up to the request timeout (30 s by default), and the
/// servers meanwhile heard no heartbeat from the node.
/// </summary>
public sealed class ShareRequestWaitTests
{
    private const long Capacity = 32L << 20;

    [Fact]
    public async Task AServerThatHoldsItsReleaseShareAnswerHoldsUpNeitherTheRoundsNorItsShare()
    {
        var token = JobToken.NewRandom();
        using var cts = Timeout(120);
        await using var steady = await StartMetadataAsync(token);
        await using var late = await StartMetadataAsync(token);

        // The node reaches the steady server through a relay that can hold its ReleaseShare requests, and the late one
        // at a port that refuses connects until the relay there listens.
        await using var steadyRelay = new HoldingRelay(cts.Token);
        steadyRelay.Listen(steady.EndPoint.Port);
        await using var lateRelay = new HoldingRelay(cts.Token);
        // Its requests' own timeout is far beyond the test's patience: only the share request's bound can let the round go on.
        await using var node = PatientNode(steadyRelay.Port, lateRelay.Port, token, Capacity);
        await node.StartAsync().WaitAsync(cts.Token);
        await using var steadyClient = await PocketClient.ConnectAsync($"127.0.0.1:{steady.EndPoint.Port}", new PocketClientOptions(), cts.Token);
        var steadyAdmin = steadyClient.Admin(token);
        await WaitUntilAsync(async () => (await steadyAdmin.GetNodesAsync(cts.Token)).SingleOrDefault() is { State: NodeState.Live, Capacity: Capacity }, "the steady server holds the whole node");

        // The late server appears: the node asks the steady one to give up half the node for it, and that request is held.
        steadyRelay.Holding = true;
        lateRelay.Listen(late.EndPoint.Port);
        await steadyRelay.FirstHeld.WaitAsync(cts.Token);

        // The rounds go on: heartbeats keep reaching the steady server, and the late one is joined, with no segments,
        // while the steady server's share stays whole in the node's view.
        var beats = steadyRelay.Heartbeats;
        await WaitUntilAsync(() => Task.FromResult(steadyRelay.Heartbeats >= beats + 10), "heartbeats reach the server whose ReleaseShare is unanswered");
        await using var lateClient = await PocketClient.ConnectAsync($"127.0.0.1:{late.EndPoint.Port}", new PocketClientOptions(), cts.Token);
        var lateAdmin = lateClient.Admin(token);
        await WaitUntilAsync(async () => (await lateAdmin.GetNodesAsync(cts.Token)).SingleOrDefault() is { State: NodeState.Live }, "the late server is joined");
        Assert.Equal([ulong.MaxValue, 0UL], node.Shares);
        Assert.Equal(1, steadyRelay.Held);

        // The answer comes: the segments the steady server gave up go to the late one, and each then holds half.
        steadyRelay.Release();
        await node.ServingAllMetadataServers.WaitAsync(cts.Token);
        await WaitUntilAsync(async () => (await lateAdmin.GetNodesAsync(cts.Token)).Single().Capacity == Capacity / 2, "the late server holds half the node");
        await WaitUntilAsync(async () => (await steadyAdmin.GetNodesAsync(cts.Token)).Single().Capacity == Capacity / 2, "the steady server gave up half");
        var shares = node.Shares;
        Assert.Equal(0UL, shares[0] & shares[1]);
        Assert.Equal(ulong.MaxValue, shares[0] | shares[1]);

        foreach (var (admin, name) in new[] { (steadyAdmin, "steady"), (lateAdmin, "late") })
        {
            var job = await admin.RegisterJobAsync(name, cts.Token);
            var data = RandomBytes(4 << 20, name.Length);
            await job.PutAsync("k", data, cancellationToken: cts.Token);
            Assert.Equal(Hash(data), Hash(await job.GetAsync("k", cancellationToken: cts.Token)));
        }
    }

    private static async Task<MetadataServer> StartMetadataAsync(JobToken token)
    {
        var server = new MetadataServer(
            new MetadataServerOptions
            {
                ClusterToken = token,
                Listener = new FrameServerOptions { EndPoint = new IPEndPoint(IPAddress.Loopback, 0) },
            },
            NullLoggerFactory.Instance);
        await server.StartAsync();
        return server;
    }

    /// <summary>
    /// A TCP relay in front of a real server, on a port bound at once (connects are refused until <see cref="Listen"/>):
    /// it passes every frame the node sends, counting heartbeats, except ReleaseShare requests while <see
    /// cref="Holding"/>, which it keeps until <see cref="Release"/> (the server then carries them out late). Replies pass
    /// as they come.
    /// </summary>
    private sealed class HoldingRelay : IAsyncDisposable
    {
        private readonly Socket _listener = new(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        private readonly CancellationTokenSource _stop;
        private readonly TaskCompletionSource _released = new(TaskCreationOptions.RunContinuationsAsynchronously);
        private readonly TaskCompletionSource _firstHeld = new(TaskCreationOptions.RunContinuationsAsynchronously);
        private readonly List<Socket> _sockets = [];
        private Task _accepting = Task.CompletedTask;
        private int _heartbeats;
        private int _held;

        public HoldingRelay(CancellationToken cancellationToken)
        {
            _stop = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
            _listener.Bind(new IPEndPoint(IPAddress.Loopback, 0));
            Port = ((IPEndPoint)_listener.LocalEndPoint!).Port;
        }

        public int Port { get; }

        public volatile bool Holding;

        public int Heartbeats => Volatile.Read(ref _heartbeats);

        public int Held => Volatile.Read(ref _held);

        public Task FirstHeld => _firstHeld.Task;

        public void Listen(int targetPort)
        {
            _listener.Listen();
            _accepting = Task.Run(async () =>
            {
                while (!_stop.IsCancellationRequested)
                {
                    var inbound = await _listener.AcceptAsync(_stop.Token);
                    var outbound = new Socket(SocketType.Stream, ProtocolType.Tcp) { NoDelay = true };
                    lock (_sockets)
                    {
                        _sockets.Add(inbound);
                        _sockets.Add(outbound);
                    }

                    await outbound.ConnectAsync(IPAddress.Loopback, targetPort, _stop.Token);
                    _ = CopyRepliesAsync(outbound, inbound);
                    _ = RelayRequestsAsync(inbound, outbound);
                }
            });
        }

        public void Release()
        {
            Holding = false;
            _released.TrySetResult();
        }

        private async Task CopyRepliesAsync(Socket from, Socket to)
        {
            var buffer = new byte[64 << 10];
            try
            {
                int n;
                while ((n = await from.ReceiveAsync(buffer, SocketFlags.None, _stop.Token)) > 0)
                {
                    await to.SendAsync(buffer.AsMemory(0, n), SocketFlags.None, _stop.Token);
                }
            }
            catch (Exception ex) when (ex is SocketException or ObjectDisposedException or OperationCanceledException)
            {
            }
        }

        private async Task RelayRequestsAsync(Socket from, Socket to)
        {
            using var sending = new SemaphoreSlim(1);
            try
            {
                while (true)
                {
                    var head = new byte[FrameHeader.Size];
                    if (!await ReadExactlyAsync(from, head, _stop.Token)
                        || FrameHeader.TryRead(head, int.MaxValue, out var header) != Status.Ok)
                    {
                        return;
                    }

                    var frame = new byte[FrameHeader.Size + header.BodyLength];
                    head.CopyTo(frame, 0);
                    if (!await ReadExactlyAsync(from, frame.AsMemory(FrameHeader.Size), _stop.Token))
                    {
                        return;
                    }

                    if (header.Opcode == Opcode.ReleaseShare && Holding)
                    {
                        Interlocked.Increment(ref _held);
                        _firstHeld.TrySetResult();
                        _ = SendLaterAsync(to, frame, sending);
                        continue;
                    }

                    if (header.Opcode == Opcode.Heartbeat)
                    {
                        Interlocked.Increment(ref _heartbeats);
                    }

                    await SendAsync(to, frame, sending);
                }
            }
            catch (Exception ex) when (ex is SocketException or ObjectDisposedException or OperationCanceledException)
            {
            }
        }

        private async Task SendLaterAsync(Socket to, byte[] frame, SemaphoreSlim sending)
        {
            try
            {
                await _released.Task.WaitAsync(_stop.Token);
                await SendAsync(to, frame, sending);
            }
            catch (Exception ex) when (ex is SocketException or ObjectDisposedException or OperationCanceledException)
            {
            }
        }

        private async Task SendAsync(Socket to, byte[] frame, SemaphoreSlim sending)
        {
            await sending.WaitAsync(_stop.Token);
            try
            {
                await to.SendAsync(frame, SocketFlags.None, _stop.Token);
            }
            finally
            {
                sending.Release();
            }
        }

        public async ValueTask DisposeAsync()
        {
            await _stop.CancelAsync();
            _listener.Dispose();
            lock (_sockets)
            {
                foreach (var socket in _sockets)
                {
                    socket.Dispose();
                }
            }

            try
            {
                await _accepting;
            }
            catch (Exception ex) when (ex is SocketException or ObjectDisposedException or OperationCanceledException)
            {
            }

            _stop.Dispose();
        }
    }
}
