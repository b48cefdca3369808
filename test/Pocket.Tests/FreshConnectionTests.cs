using System.Buffers.Binary;
using System.Net;
using System.Net.Sockets;
using System.Runtime.InteropServices;
using Microsoft.Extensions.Logging.Abstractions;
using Pocket.Networking;
using Pocket.Protocol;
using static Pocket.Tests.TestSupport;

namespace Pocket.Tests;

/// <summary>
/// A plain connection is accepted without a <see cref="Socket"/>: accept4 reports the peer and makes the descriptor
/// non-blocking, TCP_NODELAY is set before its first turn reads, and the server's close is an orderly end.
/// </summary>
public sealed partial class FreshConnectionTests
{
    private const int IpProtoTcp = 6;
    private const int TcpNoDelay = 1;
    private const int FGetFl = 3;
    private const int ONonBlock = 0x800;

    [Fact]
    public async Task AFirstRequestFindsNoDelaySetTheSocketNonBlockingAndThePeerAddressFromTheAccept()
    {
        var handler = new RecordingHandler();
        using var server = new FrameServer("test", new FrameServerOptions { EventLoops = 1 }, handler, NullLogger.Instance);
        server.Start();
        using var cts = Timeout(60);
        using var client = await ConnectRawAsync(server.EndPoint);
        await SendRawAsync(client, Header(Opcode.Ping, 0, requestId: 11));
        var reply = await ReadReplyAsync(client);
        Assert.NotNull(reply);
        Assert.Equal(11u, reply.Value.Header.RequestId);

        Assert.Equal(1, handler.NoDelay);
        Assert.True(handler.NonBlocking, "the accepted socket was blocking in its first turn");
        var local = (IPEndPoint)client.LocalEndPoint!;
        Assert.Equal(new IPEndPoint(IPAddress.Loopback, local.Port).ToString(), handler.Remote);
    }

    [Fact]
    public async Task AConnectionTheServerClosesEndsInOrderNotWithAReset()
    {
        using var server = new FrameServer("test", new FrameServerOptions { EventLoops = 1 }, new RecordingHandler(), NullLogger.Instance);
        server.Start();
        using var cts = Timeout(60);
        using var client = await ConnectRawAsync(server.EndPoint);

        // A header of an unknown version is answered, then the connection is closed (its frames can no longer be told
        // apart); the server has read every byte sent, so its close is a FIN, which the client reads as the end.
        await SendRawAsync(client, Header(Opcode.Ping, 0, requestId: 12, version: 99));
        var reply = await ReadReplyAsync(client);
        Assert.NotNull(reply);
        Assert.NotEqual(Status.Ok, reply.Value.Header.Status);
        var one = new byte[1];
        var read = await client.ReceiveAsync(one, SocketFlags.None, cts.Token);
        Assert.Equal(0, read);
    }

    [Fact]
    public void APeerAddressIsReadFromAnIPv4OrIPv6SocketAddress()
    {
        var v4 = new byte[16];
        BinaryPrimitives.WriteUInt16LittleEndian(v4, 2);
        BinaryPrimitives.WriteUInt16BigEndian(v4.AsSpan(2), 47490);
        IPAddress.Parse("10.1.2.3").GetAddressBytes().CopyTo(v4, 4);
        Assert.Equal(new IPEndPoint(IPAddress.Parse("10.1.2.3"), 47490), Linux.EndPointOf(v4));

        var v6 = new byte[28];
        BinaryPrimitives.WriteUInt16LittleEndian(v6, 10);
        BinaryPrimitives.WriteUInt16BigEndian(v6.AsSpan(2), 8080);
        IPAddress.Parse("::ffff:127.0.0.1").GetAddressBytes().CopyTo(v6, 8);
        Assert.Equal(new IPEndPoint(IPAddress.Parse("::ffff:127.0.0.1"), 8080), Linux.EndPointOf(v6));

        var unix = new byte[16];
        BinaryPrimitives.WriteUInt16LittleEndian(unix, 1);
        Assert.Null(Linux.EndPointOf(unix));
        Assert.Null(Linux.EndPointOf(v6.AsSpan(0, 20)));
    }

    [LibraryImport("libc", EntryPoint = "getsockopt", SetLastError = true)]
    private static partial int GetSockOpt(int fd, int level, int name, out int value, ref int length);

    [LibraryImport("libc", EntryPoint = "fcntl", SetLastError = true)]
    private static partial int Fcntl(int fd, int command, int argument);

    /// <summary>Answers Ping, recording the socket's options and the peer as the connection's first request found them.</summary>
    private sealed class RecordingHandler : IFrameHandler
    {
        public int NoDelay { get; private set; } = -1;

        public bool NonBlocking { get; private set; }

        public string? Remote { get; private set; }

        public void Handle(FrameContext frame)
        {
            if (Remote is null)
            {
                var length = sizeof(int);
                Assert.Equal(0, GetSockOpt(frame.Fd, IpProtoTcp, TcpNoDelay, out var value, ref length));
                NoDelay = value;
                NonBlocking = (Fcntl(frame.Fd, FGetFl, 0) & ONonBlock) != 0;
                Remote = frame.Remote;
            }

            frame.Reply(Status.Ok);
        }

        public void OnDisconnected(FrameContext connection)
        {
        }
    }
}
