using System.Net;
using System.Net.Sockets;
using Pocket.Client;
using Pocket.Networking;

namespace Pocket.Tests;

/// <summary>
/// A function's cold start: a fresh client connects to a loopback address on the caller's thread (no hop to a pool
/// thread and back) with a socket of the address's own family, and a refused, cancelled or remote connect behaves as before.
/// </summary>
public sealed class ColdStartTests
{
    [Fact]
    public async Task AConnectToALoopbackAddressCompletesOnTheCallersThread()
    {
        using var listener = Listen(IPAddress.Loopback);
        var port = ((IPEndPoint)listener.LocalEndPoint!).Port;

        // The handshake is done inside connect(), so the connection is whole when ConnectAsync returns, before any
        // await: with the connect on a pool thread the task was still pending here.
        var connecting = FrameConnection.ConnectAsync("127.0.0.1", port, new FrameConnectionOptions());
        Assert.True(connecting.IsCompletedSuccessfully, $"connect to 127.0.0.1:{port} still pending when ConnectAsync returned ({connecting.Status})");
        await using var connection = await connecting;
        using var accepted = await listener.AcceptAsync().WaitAsync(TimeSpan.FromSeconds(30));
        Assert.True(connection.IsConnected);
        Assert.Equal($"127.0.0.1:{port}", connection.Remote);
    }

    [Fact]
    public async Task AnIPv4AddressIsConnectedWithAnIPv4Socket()
    {
        using var listener = Listen(IPAddress.Loopback);
        var port = ((IPEndPoint)listener.LocalEndPoint!).Port;

        // A dual-mode IPv6 socket reaches the same server (as an IPv4-mapped address) after two more system calls per
        // connect: the family the kernel reports for the client's end says which socket it was.
        await using var connection = await FrameConnection.ConnectAsync("127.0.0.1", port, new FrameConnectionOptions());
        using var accepted = await listener.AcceptAsync().WaitAsync(TimeSpan.FromSeconds(30));
        var local = Assert.IsType<IPEndPoint>(connection.LocalEndPoint);
        Assert.Equal(AddressFamily.InterNetwork, local.AddressFamily);
        Assert.Equal(IPAddress.Loopback, local.Address);
        Assert.Equal(local, accepted.RemoteEndPoint);
    }

    [Fact]
    public async Task AHostNameStillReachesAnIPv4Listener()
    {
        using var listener = Listen(IPAddress.Loopback);
        var port = ((IPEndPoint)listener.LocalEndPoint!).Port;

        // A name may resolve to either family, so it keeps the dual-mode socket, which reaches both (on a machine
        // without IPv6 the runtime makes that an IPv4 socket).
        await using var connection = await FrameConnection.ConnectAsync("localhost", port, new FrameConnectionOptions());
        using var accepted = await listener.AcceptAsync().WaitAsync(TimeSpan.FromSeconds(30));
        Assert.True(connection.IsConnected);
        var family = Socket.OSSupportsIPv6 ? AddressFamily.InterNetworkV6 : AddressFamily.InterNetwork;
        Assert.Equal(family, Assert.IsType<IPEndPoint>(connection.LocalEndPoint).AddressFamily);
    }

    [Fact]
    public async Task ARefusedLoopbackConnectIsStillAClearUnreachableError()
    {
        // A port that was just free: nothing listens on it any more, so the connect is refused at once.
        int port;
        using (var probe = Listen(IPAddress.Loopback))
        {
            port = ((IPEndPoint)probe.LocalEndPoint!).Port;
        }

        var error = await Assert.ThrowsAsync<PocketUnreachableException>(() => PocketClient.ConnectAsync($"127.0.0.1:{port}"));
        Assert.Contains($"127.0.0.1:{port}", error.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task ACancelledLoopbackConnectThrowsOperationCanceled()
    {
        using var listener = Listen(IPAddress.Loopback);
        var port = ((IPEndPoint)listener.LocalEndPoint!).Port;
        using var cancelled = new CancellationTokenSource();
        await cancelled.CancelAsync();
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => FrameConnection.ConnectAsync("127.0.0.1", port, new FrameConnectionOptions(), cancelled.Token));
    }

    /// <summary>
    /// A fresh client makes its first connection without the reconnect path: a listener that never takes it (its
    /// accept queue full, so the kernel drops the handshake) must still end the connect by the options' timeout with
    /// the client's own error, not hang for the kernel's minutes of retries.
    /// </summary>
    [Fact]
    public async Task AFreshClientsConnectToAListenerThatNeverTakesItFailsByItsConnectTimeout()
    {
        using var listener = Listen(IPAddress.Loopback, backlog: 0);
        var port = ((IPEndPoint)listener.LocalEndPoint!).Port;
        using var queued = FillAcceptQueue(port);

        // On a pool thread: a loopback connect blocks the caller's thread until it ends, and the kernel alone would end
        // it only after its SYN retries (over two minutes), past the bound here.
        var options = new PocketClientOptions { ConnectTimeout = TimeSpan.FromSeconds(1) };
        var connect = Task.Run(() => PocketClient.ConnectAsync($"127.0.0.1:{port}", options));
        var error = await Assert.ThrowsAsync<PocketUnreachableException>(() => connect.WaitAsync(TimeSpan.FromSeconds(60)));
        Assert.Contains($"127.0.0.1:{port}", error.Message, StringComparison.Ordinal);

        // Ended by the options' timeout (which cancels the connect), not by the kernel giving up (a SocketException).
        Assert.IsAssignableFrom<OperationCanceledException>(error.InnerException?.InnerException);
    }

    /// <summary>The caller's token ends a fresh client's connect that the listener never takes.</summary>
    [Fact]
    public async Task CancellingAFreshClientsHangingConnectThrowsOperationCanceled()
    {
        using var listener = Listen(IPAddress.Loopback, backlog: 0);
        var port = ((IPEndPoint)listener.LocalEndPoint!).Port;
        using var queued = FillAcceptQueue(port);

        // The options' timeout is far off: only the caller's token can end this connect within the test's bound.
        var options = new PocketClientOptions { ConnectTimeout = TimeSpan.FromMinutes(10) };
        using var cancel = new CancellationTokenSource(TimeSpan.FromMilliseconds(200));
        var connect = Task.Run(() => PocketClient.ConnectAsync($"127.0.0.1:{port}", options, cancel.Token));
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => connect.WaitAsync(TimeSpan.FromSeconds(60)));
    }

    /// <summary>
    /// Connects until a connect to <paramref name="port"/> (a listener that never accepts) no longer completes at once:
    /// its accept queue is full from then on. The sockets are disposed with the returned object.
    /// </summary>
    private static Disposables FillAcceptQueue(int port)
    {
        var sockets = new Disposables();
        for (var i = 0; i < 64; i++)
        {
            var socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp) { Blocking = false };
            sockets.Add(socket);
            try
            {
                socket.Connect(new IPEndPoint(IPAddress.Loopback, port));
            }
            catch (SocketException ex) when (ex.SocketErrorCode is SocketError.WouldBlock or SocketError.InProgress)
            {
                // Not completed within connect(): the listener dropped this handshake, so its queue is full.
                return sockets;
            }
        }

        throw new InvalidOperationException($"64 connects to a listener with backlog 0 on port {port} all completed at once");
    }

    private sealed class Disposables : List<IDisposable>, IDisposable
    {
        public void Dispose() => ForEach(d => d.Dispose());
    }

    private static Socket Listen(IPAddress address, int backlog = 16)
    {
        var listener = new Socket(address.AddressFamily, SocketType.Stream, ProtocolType.Tcp);
        listener.Bind(new IPEndPoint(address, 0));
        listener.Listen(backlog);
        return listener;
    }
}
