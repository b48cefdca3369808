using System.Diagnostics;
using System.Net;
using System.Net.Security;
using System.Net.Sockets;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using Microsoft.Extensions.Time.Testing;
using Pocket.Client;
using Pocket.Embedded;
using Pocket.Networking;
using Pocket.Protocol;
using static Pocket.Tests.TestSupport;

namespace Pocket.Tests;

/// <summary>
/// TLS connections on the event loops: a thousand of them hold no thread each, bad input (broken records, a bad
/// frame, a half handshake, a plaintext client) is answered or closed as on a plain connection while the server goes
/// on serving, and a TLS client that stops reading its replies is closed at the reply bound. Real sockets and real
/// handshakes (a self-signed certificate made here); bounds on counts and bytes, never on time.
/// </summary>
public sealed class TlsLoopTests
{
    [Fact]
    public async Task AThousandTlsConnectionsEachGetFromTheMetadataServerOnBoundedThreads()
    {
        const int connections = 1_000;
        using var certificate = SelfSigned();
        await using var cluster = await PocketCluster.StartAsync(new PocketClusterOptions
        {
            StorageNodes = 0,
            Listener = new FrameServerOptions { Certificate = certificate },
        });
        await using var client = await cluster.ConnectAsync(new PocketClientOptions { TlsHost = "localhost", CertificateValidation = (_, _, _, _) => true });
        var job = await cluster.Admin(client).RegisterJobAsync("tls-fan-in");
        var data = DataFor("a", 1024);
        await job.PutAsync("a", data);
        var server = cluster.Metadata.Listener;
        var threadsBefore = Process.GetCurrentProcess().Threads.Count;
        var own = server.ConnectionCount;

        var streams = new SslStream[connections];
        try
        {
            await ForEachAsync(connections, 128, async i => streams[i] = await ConnectTlsAsync(cluster.Metadata.EndPoint));
            await WaitUntilAsync(() => Task.FromResult(server.ConnectionCount == own + connections), "the server holds every connection");

            var get = new BodyWriter().Str("a").I64(0).I64(-1).ToArray();
            await ForEachAsync(connections, 256, async i =>
            {
                using var cts = Timeout();
                await streams[i].WriteAsync((byte[])[.. Header(Opcode.Get, get.Length, requestId: (uint)i, token: job.Token), .. get], cts.Token);
                var (header, body) = await ReadReplyAsync(streams[i], cts.Token);
                Assert.Equal(((uint)i, Status.Ok), (header.RequestId, header.Status));
                Assert.Equal(data, body[^data.Length..]);
            });

            // A thread per TLS connection would have added a thousand.
            var threads = Process.GetCurrentProcess().Threads.Count;
            Assert.True(threads - threadsBefore < 200, $"threads grew from {threadsBefore} to {threads} with {connections} TLS connections");
        }
        finally
        {
            foreach (var stream in streams)
            {
                stream?.Dispose();
            }
        }

        await WaitUntilAsync(() => Task.FromResult(server.ConnectionCount == own), "every TLS connection is gone from the server");
    }

    [Fact]
    public async Task BrokenRecordsAndBadFramesOverTlsAreClosedAndTheServerServesOn()
    {
        using var certificate = SelfSigned();
        var log = new CapturingLogger();
        using var server = new FrameServer("test", new FrameServerOptions { Certificate = certificate }, new EchoHandler(), log);
        server.Start();
        using var cts = Timeout();

        // Bytes that are no TLS record, after a good handshake and request: the connection is closed.
        using (var socket = await ConnectRawAsync(server.EndPoint))
        await using (var tls = await AuthenticateAsync(socket))
        {
            Assert.Equal([1, 2], await PingAsync(tls, [1, 2], cts.Token));
            await SendRawAsync(socket, [.. Enumerable.Range(0, 64).Select(i => (byte)(i * 7))]);
            Assert.True(await IsClosedAsync(socket));
        }

        // A well-encrypted frame header with an unknown version: answered with the error, then closed, as in plain.
        using (var socket = await ConnectRawAsync(server.EndPoint))
        await using (var tls = await AuthenticateAsync(socket))
        {
            await tls.WriteAsync(Header(Opcode.Ping, 0, requestId: 3, version: 99), cts.Token);
            var (header, _) = await ReadReplyAsync(tls, cts.Token);
            Assert.Equal((3u, Status.VersionMismatch), (header.RequestId, header.Status));
            Assert.Equal(0, await tls.ReadAsync(new byte[1], cts.Token));
        }

        // A plaintext client on the TLS port: its frame is no handshake, so it gets no reply, only the close.
        using (var plain = await ConnectRawAsync(server.EndPoint))
        {
            await SendRawAsync(plain, Header(Opcode.Ping, 0));
            Assert.True(await IsClosedAsync(plain));
        }

        await WaitUntilAsync(() => Task.FromResult(server.ConnectionCount == 0), "the bad connections are gone");
        Assert.Contains(log.Lines, l => l.Contains("TLS:", StringComparison.Ordinal));

        using (var socket = await ConnectRawAsync(server.EndPoint))
        await using (var tls = await AuthenticateAsync(socket))
        {
            Assert.Equal([9], await PingAsync(tls, [9], cts.Token));
        }
    }

    [Fact]
    public async Task HalfHandshakesHoldNoThreadAndAreClosedByTheIdleTimeout()
    {
        const int peers = 300;
        var idleTimeout = TimeSpan.FromMinutes(1);
        var time = new FakeTimeProvider();
        using var certificate = SelfSigned();
        var log = new CapturingLogger();
        using var server = new FrameServer("test", new FrameServerOptions { Certificate = certificate, IdleTimeout = idleTimeout, TimeProvider = time }, new EchoHandler(), log);
        server.Start();
        var threadsBefore = Process.GetCurrentProcess().Threads.Count;

        // The first bytes of a TLS record header (a handshake record of 512 bytes), then silence.
        var sockets = new Socket[peers];
        try
        {
            await ForEachAsync(peers, 64, async i =>
            {
                sockets[i] = await ConnectRawAsync(server.EndPoint);
                await SendRawAsync(sockets[i], [0x16, 0x03, 0x01, 0x02, 0x00, 0x01]);
            });
            await WaitUntilAsync(() => Task.FromResult(server.ConnectionCount == peers), "the server holds every half handshake");
            var threads = Process.GetCurrentProcess().Threads.Count;
            Assert.True(threads - threadsBefore < 100, $"threads grew from {threadsBefore} to {threads} with {peers} half handshakes");

            // Meanwhile a whole handshake is served.
            using var cts = Timeout();
            using (var socket = await ConnectRawAsync(server.EndPoint))
            await using (var tls = await AuthenticateAsync(socket))
            {
                Assert.Equal([7], await PingAsync(tls, [7], cts.Token));
            }

            await WaitUntilAsync(
                () =>
                {
                    time.Advance(idleTimeout / 4);
                    return Task.FromResult(server.ConnectionCount == 0);
                },
                "the idle timeout closes every half handshake");
            foreach (var socket in sockets)
            {
                Assert.True(await IsClosedAsync(socket));
            }
        }
        finally
        {
            foreach (var socket in sockets)
            {
                socket?.Dispose();
            }
        }

        Assert.Contains(log.Lines, l => l.Contains("idle for", StringComparison.Ordinal));
    }

    [Fact]
    public async Task ATlsClientThatNeverReadsItsRepliesIsPausedWithinTheBoundThenClosed()
    {
        const int bound = 1 << 20;
        var stall = TimeSpan.FromSeconds(30);
        using var certificate = SelfSigned();
        var log = new CapturingLogger();
        var time = new FakeTimeProvider();
        using var server = new FrameServer(
            "test",
            new FrameServerOptions { Certificate = certificate, MaxReplyBacklog = bound, ReplyStallTimeout = stall, IdleTimeout = TimeSpan.Zero, TimeProvider = time },
            new EchoHandler(),
            log);
        server.Start();
        using var cts = Timeout();

        // Each request asks for a 16 KiB echo; 64 MiB of replies is asked for, none read.
        using var socket = await ConnectRawAsync(server.EndPoint);
        var greedy = await AuthenticateAsync(socket);
        byte[] one = [.. Header(Opcode.Ping, 4, requestId: 1), .. BitConverter.GetBytes(16 << 10)];
        var burst = Burst(256, _ => one);

        var sending = Task.Run(async () =>
        {
            try
            {
                for (var i = 0; i < 16; i++)
                {
                    await greedy.WriteAsync(burst, cts.Token);
                }
            }
            catch (IOException)
            {
                // Closed by the server.
            }
        });

        // Paused while its replies (ciphertext included) wait; closed once it read none of them for the stall timeout.
        await WaitUntilAsync(() => Task.FromResult(server.ReplyPauses > 0), "the server stops reading the TLS connection that does not read");
        await WaitUntilAsync(
            () =>
            {
                time.Advance(stall / 4);
                return Task.FromResult(log.StalledReplyBytes() is not null);
            },
            "the server closes the TLS connection that does not read");
        await sending.WaitAsync(Patience);
        Assert.InRange(log.StalledReplyBytes()!.Value, 1, bound);
        Assert.DoesNotContain(log.Lines, l => l.Contains("over the bound", StringComparison.Ordinal));
        Assert.Equal(1, server.StalledReaders);
        await greedy.DisposeAsync();

        // Another TLS client is served.
        using (var other = await ConnectRawAsync(server.EndPoint))
        await using (var tls = await AuthenticateAsync(other))
        {
            Assert.Equal([5], await PingAsync(tls, [5], cts.Token));
        }

        await WaitUntilAsync(() => Task.FromResult(server.ConnectionCount == 0), "every connection is gone");
    }

    /// <summary>
    /// A TLS client that asks for 32 MiB of replies against a 1 MiB bound before it reads one (more than the kernel's
    /// socket buffers take: 4 MiB of send buffer here, and a receive buffer that grows only as its owner reads): the
    /// server holds its requests back while ciphertext waits, and every reply arrives, in order, on the same connection.
    /// </summary>
    [Fact]
    public async Task ATlsClientThatAsksForMoreThanTheBoundAtOnceIsServedInFull()
    {
        const int requests = 2048;
        const int size = 16 << 10;
        using var certificate = SelfSigned();
        using var server = new FrameServer("test", new FrameServerOptions { Certificate = certificate, MaxReplyBacklog = 1 << 20 }, new EchoHandler(), new CapturingLogger());
        server.Start();
        using var cts = Timeout();
        await using var tls = await ConnectTlsAsync(server.EndPoint);
        await tls.WriteAsync(Burst(requests, i => [.. Header(Opcode.Ping, 4, requestId: (uint)i), .. BitConverter.GetBytes(size)]), cts.Token);
        await WaitUntilAsync(() => Task.FromResult(server.ReplyPauses > 0), "the server holds the TLS connection's requests back");
        var header = new byte[FrameHeader.Size];
        var body = new byte[size];
        for (var i = 0; i < requests; i++)
        {
            await tls.ReadExactlyAsync(header, cts.Token);
            Assert.Equal(Status.Ok, FrameHeader.TryRead(header, int.MaxValue, out var reply));
            Assert.Equal((uint)i, reply.RequestId);
            Assert.Equal(size, reply.BodyLength);
            await tls.ReadExactlyAsync(body, cts.Token);
            Assert.Equal(EchoHandler.Large[..size], body);
        }
    }

    private static X509Certificate2 SelfSigned()
    {
        using var key = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        var request = new CertificateRequest("CN=localhost", key, HashAlgorithmName.SHA256);
        return request.CreateSelfSigned(DateTimeOffset.UtcNow.AddMinutes(-5), DateTimeOffset.UtcNow.AddDays(1));
    }

    private static async Task<SslStream> ConnectTlsAsync(IPEndPoint endPoint) => await AuthenticateAsync(await ConnectRawAsync(endPoint), ownsSocket: true);

    private static async Task<SslStream> AuthenticateAsync(Socket socket, bool ownsSocket = false)
    {
        var tls = new SslStream(new NetworkStream(socket, ownsSocket), leaveInnerStreamOpen: false, (_, _, _, _) => true);
        using var cts = Timeout();
        await tls.AuthenticateAsClientAsync(new SslClientAuthenticationOptions { TargetHost = "localhost" }, cts.Token);
        return tls;
    }

    private static async Task<byte[]> PingAsync(Stream stream, byte[] body, CancellationToken cancellationToken)
    {
        await stream.WriteAsync((byte[])[.. Header(Opcode.Ping, body.Length, requestId: 2), .. body], cancellationToken);
        var (header, reply) = await ReadReplyAsync(stream, cancellationToken);
        Assert.Equal((2u, Status.Ok), (header.RequestId, header.Status));
        return reply;
    }

    private static async Task<(FrameHeader Header, byte[] Body)> ReadReplyAsync(Stream stream, CancellationToken cancellationToken)
    {
        var bytes = new byte[FrameHeader.Size];
        await stream.ReadExactlyAsync(bytes, cancellationToken);
        Assert.Equal(Status.Ok, FrameHeader.TryRead(bytes, int.MaxValue, out var header));
        var body = new byte[header.BodyLength];
        await stream.ReadExactlyAsync(body, cancellationToken);
        return (header, body);
    }

    private static async Task ForEachAsync(int count, int parallel, Func<int, Task> work)
    {
        using var gate = new SemaphoreSlim(parallel);
        await Task.WhenAll(Enumerable.Range(0, count).Select(async i =>
        {
            await gate.WaitAsync();
            try
            {
                await work(i);
            }
            finally
            {
                gate.Release();
            }
        }));
    }
}
