using System.Net;
using System.Net.Sockets;
using Pocket.Admin;
using Pocket.Client;
using Pocket.Protocol;
using static Pocket.Tests.TestSupport;

namespace Pocket.Tests;

/// <summary>
/// A get into the caller's buffer (<see cref="PocketJob.GetAsync(string, long, Memory{byte}, GetFlags, CancellationToken)"/>)
/// sends on the metadata connection itself and handles its loss on its own path: a request that was sent and lost
/// with its connection becomes the client's clear error (the server may have acted on it), never a bare connection
/// error; the next get reconnects. A proxy between the client and a real metadata server holds the get (the gate)
/// and then cuts the connection, so the loss falls exactly while the get waits for its reply.
/// </summary>
public sealed class GetIntoBufferConnectionLossTests
{
    [Fact]
    public async Task AGetIntoABufferWhoseConnectionIsCutWhileItWaitsFailsWithTheClientsErrorAndTheNextOneReconnects()
    {
        using var timeout = new CancellationTokenSource(Patience * 2);
        await using var cluster = await StartClusterAsync(nodes: 1);
        await using var admin = await cluster.ConnectAsync();
        var registered = await cluster.Admin(admin).RegisterJobAsync("cut", NodeTier.Dram, null, null);
        var data = DataFor("small", 1024);
        await registered.PutAsync("small", data, cancellationToken: timeout.Token);

        await using var proxy = CuttingProxy.Start(cluster.Metadata.EndPoint.Port);
        await using var client = await PocketClient.ConnectAsync($"127.0.0.1:{proxy.Port}", new PocketClientOptions { JobLostWait = Patience }, timeout.Token);
        var job = client.OpenJob(registered.Id, registered.Token);
        var buffer = new byte[data.Length];
        Assert.Equal(data.Length, await job.GetAsync("small", 0, buffer, cancellationToken: timeout.Token));
        Assert.Equal(data, buffer);

        // The next request the client sends is held by the proxy; once it is, the connection is cut under it.
        proxy.HoldNext();
        Array.Clear(buffer);
        var get = job.GetAsync("small", 0, buffer, cancellationToken: timeout.Token).AsTask();
        var held = await proxy.Held.WaitAsync(timeout.Token);
        Assert.False(get.IsCompleted, "the get ended before its connection was cut");
        proxy.Cut(held);

        // Sent, then lost: the server may have acted on it, so it is not sent again. The client asks (on a new
        // connection) whether the job still exists; it does, so the caller gets the unreachable error.
        var error = await Assert.ThrowsAsync<PocketException>(() => get.WaitAsync(timeout.Token));
        Assert.IsNotType<PocketJobLostException>(error);
        Assert.Contains("unreachable", error.Message, StringComparison.Ordinal);
        Assert.IsType<Pocket.Networking.ConnectionLostException>(error.InnerException);

        Assert.Equal(data.Length, await job.GetAsync("small", 0, buffer, cancellationToken: timeout.Token));
        Assert.Equal(data, buffer);
    }

    /// <summary>
    /// A small put and a whole-object get send on the metadata connection themselves too (no async level of the
    /// client's between them and the reply): the same loss becomes the same clear error, and the next request reconnects.
    /// </summary>
    [Theory]
    [InlineData("put")]
    [InlineData("get")]
    public async Task ASmallPutOrAWholeGetWhoseConnectionIsCutWhileItWaitsFailsWithTheClientsErrorAndTheNextOneReconnects(string op)
    {
        using var timeout = new CancellationTokenSource(Patience * 2);
        await using var cluster = await StartClusterAsync(nodes: 1);
        await using var admin = await cluster.ConnectAsync();
        var registered = await cluster.Admin(admin).RegisterJobAsync("cut-" + op, NodeTier.Dram, null, null);
        var data = DataFor("small", 1024);
        await registered.PutAsync("small", data, cancellationToken: timeout.Token);

        await using var proxy = CuttingProxy.Start(cluster.Metadata.EndPoint.Port);
        await using var client = await PocketClient.ConnectAsync($"127.0.0.1:{proxy.Port}", new PocketClientOptions { JobLostWait = Patience }, timeout.Token);
        var job = client.OpenJob(registered.Id, registered.Token);
        Assert.Equal(data, await job.GetAsync("small", cancellationToken: timeout.Token));

        proxy.HoldNext();
        var request = op == "put"
            ? job.PutAsync("held", data, cancellationToken: timeout.Token).AsTask()
            : job.GetAsync("small", cancellationToken: timeout.Token).AsTask();
        var held = await proxy.Held.WaitAsync(timeout.Token);
        Assert.False(request.IsCompleted, $"the {op} ended before its connection was cut");
        proxy.Cut(held);

        var error = await Assert.ThrowsAsync<PocketException>(() => request.WaitAsync(timeout.Token));
        Assert.IsNotType<PocketJobLostException>(error);
        Assert.Contains("unreachable", error.Message, StringComparison.Ordinal);
        Assert.IsType<Pocket.Networking.ConnectionLostException>(error.InnerException);

        // The held put never reached the server: the key is free, and the next requests go out on a new connection.
        await job.PutAsync("held", data, cancellationToken: timeout.Token);
        Assert.Equal(data, await job.GetAsync("held", cancellationToken: timeout.Token));
        Assert.Equal(data, await job.GetAsync("small", cancellationToken: timeout.Token));
    }

    /// <summary>A TCP proxy to a server that can hold a connection's next request (not forwarded) and cut it.</summary>
    private sealed class CuttingProxy : IAsyncDisposable
    {
        private readonly TcpListener _listener = new(IPAddress.Loopback, 0);
        private readonly int _upstream;
        private readonly CancellationTokenSource _stop = new();
        private readonly List<Socket> _sockets = [];
        private readonly Dictionary<Socket, Socket> _pairs = [];
        private Task _accepting = Task.CompletedTask;
        private int _hold;

        private CuttingProxy(int upstream) => _upstream = upstream;

        public int Port => ((IPEndPoint)_listener.LocalEndpoint).Port;

        /// <summary>The client-side socket whose request was held (after <see cref="HoldNext"/>).</summary>
        public Task<Socket> Held => HeldSource.Task;

        private TaskCompletionSource<Socket> HeldSource { get; set; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

        public static CuttingProxy Start(int upstream)
        {
            var proxy = new CuttingProxy(upstream);
            proxy._listener.Start();
            proxy._accepting = proxy.AcceptAsync();
            return proxy;
        }

        public void HoldNext()
        {
            HeldSource = new TaskCompletionSource<Socket>(TaskCreationOptions.RunContinuationsAsynchronously);
            Volatile.Write(ref _hold, 1);
        }

        /// <summary>Closes the held connection on both sides.</summary>
        public void Cut(Socket client)
        {
            lock (_sockets)
            {
                _pairs[client].Dispose();
            }

            client.Dispose();
        }

        private async Task AcceptAsync()
        {
            try
            {
                while (true)
                {
                    var client = await _listener.AcceptSocketAsync(_stop.Token);
                    var upstream = new Socket(SocketType.Stream, ProtocolType.Tcp) { NoDelay = true };
                    await upstream.ConnectAsync(IPAddress.Loopback, _upstream, _stop.Token);
                    client.NoDelay = true;
                    lock (_sockets)
                    {
                        _sockets.Add(client);
                        _sockets.Add(upstream);
                        _pairs[client] = upstream;
                    }

                    _ = PumpAsync(client, upstream, holding: true);
                    _ = PumpAsync(upstream, client, holding: false);
                }
            }
            catch (Exception ex) when (ex is OperationCanceledException or SocketException or ObjectDisposedException)
            {
                // Stopped.
            }
        }

        private async Task PumpAsync(Socket from, Socket to, bool holding)
        {
            var buffer = new byte[64 << 10];
            try
            {
                while (true)
                {
                    var n = await from.ReceiveAsync(buffer, SocketFlags.None, _stop.Token);
                    if (n == 0)
                    {
                        to.Shutdown(SocketShutdown.Send);
                        return;
                    }

                    if (holding && Interlocked.Exchange(ref _hold, 0) == 1)
                    {
                        // Not forwarded: the server never sees the request, the client waits for its reply.
                        HeldSource.TrySetResult(from);
                        return;
                    }

                    await to.SendAsync(buffer.AsMemory(0, n), SocketFlags.None, _stop.Token);
                }
            }
            catch (Exception ex) when (ex is OperationCanceledException or SocketException or ObjectDisposedException)
            {
                // The other side closed, or the proxy was cut or stopped.
            }
        }

        public async ValueTask DisposeAsync()
        {
            await _stop.CancelAsync();
            _listener.Stop();
            await _accepting;
            lock (_sockets)
            {
                foreach (var socket in _sockets)
                {
                    socket.Dispose();
                }
            }

            _stop.Dispose();
        }
    }
}
