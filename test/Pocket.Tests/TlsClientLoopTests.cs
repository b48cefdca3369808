using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using Pocket.Client;
using Pocket.Embedded;
using Pocket.Networking;
using Pocket.Protocol;
using static Pocket.Tests.TestSupport;

namespace Pocket.Tests;

/// <summary>
/// A client's TLS connections on the client loops: many of them hold no thread each, small and large frames go both
/// ways over TLS, and a server that breaks off or never answers the handshake gives the caller a clear error rather
/// than a hang. Real sockets and real handshakes (a self-signed certificate made here); bounds on counts, never on time.
/// </summary>
public sealed class TlsClientLoopTests
{
    private static readonly FrameConnectionOptions TrustAll = new()
    {
        TlsHost = "localhost",
        CertificateValidation = (_, _, _, _) => true,
    };

    [Fact]
    public async Task ManyTlsClientConnectionsAddNoThreadEach()
    {
        const int connections = 256;
        using var certificate = SelfSigned();
        using var server = new FrameServer("test", new FrameServerOptions { Certificate = certificate }, new EchoHandler(), new CapturingLogger());
        server.Start();

        // The client loops (and the pool's first threads) start with the first connection, before the count.
        await using (var warm = await FrameConnection.ConnectAsync("127.0.0.1", server.EndPoint.Port, TrustAll))
        {
            Assert.Equal([1], await PingAsync(warm, [1]));
        }

        var threadsBefore = Process.GetCurrentProcess().Threads.Count;
        var clients = new FrameConnection[connections];
        try
        {
            for (var i = 0; i < connections; i++)
            {
                clients[i] = await FrameConnection.ConnectAsync("127.0.0.1", server.EndPoint.Port, TrustAll);
            }

            await Task.WhenAll(clients.Select(async (c, i) => Assert.Equal([(byte)i], await PingAsync(c, [(byte)i]))));

            // A reader thread per TLS connection would have added 256.
            var threads = Process.GetCurrentProcess().Threads.Count;
            Assert.True(threads - threadsBefore < connections / 4, $"threads grew from {threadsBefore} to {threads} with {connections} TLS client connections");
        }
        finally
        {
            foreach (var client in clients)
            {
                client?.Dispose();
            }
        }
    }

    [Fact]
    public async Task SmallAndLargeFramesRoundTripOverTlsOnTheClientLoops()
    {
        using var certificate = SelfSigned();
        using var server = new FrameServer("test", new FrameServerOptions { Certificate = certificate }, new EchoHandler(), new CapturingLogger());
        server.Start();
        await using var client = await FrameConnection.ConnectAsync("127.0.0.1", server.EndPoint.Port, TrustAll);

        // A large reply into the caller's buffer and one into an array of its own; pipelined small ones beside them.
        var into = new byte[1 << 20];
        var large = client.SendAsync(Opcode.Ping, FrameFlags.None, default, BitConverter.GetBytes(1 << 20), replyInto: into).AsTask();
        var array = client.SendAsync(Opcode.Ping, FrameFlags.None, default, BitConverter.GetBytes(300_000)).AsTask();
        var small = Enumerable.Range(0, 64).Select(i => PingAsync(client, [(byte)i, 7, 7])).ToArray();
        var intoReply = await large;
        Assert.Equal((Status.Ok, 1 << 20), (intoReply.Status, intoReply.DataLength));
        Assert.Equal(EchoHandler.Large, into);
        var arrayReply = await array;
        Assert.Equal(EchoHandler.Large[..300_000], arrayReply.Body[..arrayReply.DataLength]);
        for (var i = 0; i < small.Length; i++)
        {
            Assert.Equal([(byte)i, 7, 7], await small[i]);
        }

        // A request frame over the gather limit goes out encrypted through the same write path.
        var body = RandomBytes(100_000, seed: 3);
        Assert.Equal(body, await PingAsync(client, body));
    }

    [Fact]
    public async Task PutsAndGetsOfSmallAndLargeObjectsGoOverTlsToEveryServer()
    {
        using var certificate = SelfSigned();
        await using var cluster = await StartClusterAsync(nodes: 1, configure: o => o with
        {
            Listener = new FrameServerOptions { Certificate = certificate },
            Connection = TrustAll,
        });
        await using var client = await cluster.ConnectAsync(new PocketClientOptions { TlsHost = "localhost", CertificateValidation = (_, _, _, _) => true });
        var job = await cluster.Admin(client).RegisterJobAsync("tls-client-loops");
        foreach (var size in new[] { 1 << 10, 64 << 10, 3 << 20 })
        {
            var data = RandomBytes(size, seed: size);
            await job.PutAsync($"k{size}", data);
            Assert.Equal(data, await job.GetAsync($"k{size}"));
            var into = new byte[size];
            Assert.Equal(size, await job.GetAsync($"k{size}", 0, into));
            Assert.Equal(data, into);
        }
    }

    [Fact]
    public async Task AServerThatClosesInTheMiddleOfTheHandshakeFailsTheConnectClearly()
    {
        using var listener = new Socket(SocketType.Stream, ProtocolType.Tcp);
        listener.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        listener.Listen();
        var port = ((IPEndPoint)listener.LocalEndPoint!).Port;

        // Takes the client's hello, then closes without a word.
        var closer = Task.Run(async () =>
        {
            using var peer = await listener.AcceptAsync();
            await peer.ReceiveAsync(new byte[4096]);
            peer.Shutdown(SocketShutdown.Both);
        });

        var connect = FrameConnection.ConnectAsync("127.0.0.1", port, TrustAll with { ConnectTimeout = TimeSpan.FromMinutes(5) });
        var failure = await Assert.ThrowsAsync<ConnectionLostException>(() => connect.WaitAsync(Patience * 2));
        Assert.Contains($"cannot connect to 127.0.0.1:{port}", failure.Message, StringComparison.Ordinal);
        await closer;
    }

    [Fact]
    public async Task AServerThatNeverAnswersTheHandshakeFailsTheConnectAtItsTimeout()
    {
        using var listener = new Socket(SocketType.Stream, ProtocolType.Tcp);
        listener.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        listener.Listen();
        var port = ((IPEndPoint)listener.LocalEndPoint!).Port;

        // Accepts (the kernel does, from the backlog) and never sends a byte: the client waits in its handshake.
        var connect = FrameConnection.ConnectAsync("127.0.0.1", port, TrustAll with { ConnectTimeout = TimeSpan.FromMilliseconds(500) });
        var failure = await Assert.ThrowsAsync<ConnectionLostException>(() => connect.WaitAsync(Patience * 2));
        Assert.Contains($"cannot connect to 127.0.0.1:{port}", failure.Message, StringComparison.Ordinal);
    }

    private static async Task<byte[]> PingAsync(FrameConnection connection, byte[] body)
    {
        var reply = await connection.SendAsync(Opcode.Ping, FrameFlags.None, default, body);
        Assert.Equal(Status.Ok, reply.Status);
        return reply.Body.AsSpan(0, reply.DataLength).ToArray();
    }

    private static X509Certificate2 SelfSigned()
    {
        using var key = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        var request = new CertificateRequest("CN=localhost", key, HashAlgorithmName.SHA256);
        return request.CreateSelfSigned(DateTimeOffset.UtcNow.AddMinutes(-5), DateTimeOffset.UtcNow.AddDays(1));
    }
}
