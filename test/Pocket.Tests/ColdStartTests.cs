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

    private static Socket Listen(IPAddress address)
    {
        var listener = new Socket(address.AddressFamily, SocketType.Stream, ProtocolType.Tcp);
        listener.Bind(new IPEndPoint(address, 0));
        listener.Listen(16);
        return listener;
    }
}
