using System.Net.Security;
using System.Net.Sockets;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using Pocket.Networking;
using Pocket.Protocol;
using static Pocket.Tests.TestSupport;

namespace Pocket.Tests;

/// <summary>A handler whose admission fails is answered the same on the event loops (plain) and on a TLS connection's thread.</summary>
public sealed class AdmissionFailureTests
{
    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task AnAdmitThatRepliedAndThenThrewKeepsItsReplyAndTheConnectionServes(bool tls)
    {
        using var certificate = tls ? SelfSigned() : null;
        var log = new CapturingLogger();
        using var server = new FrameServer("test", new FrameServerOptions { Certificate = certificate }, new ThrowingAdmitHandler(), log);
        server.Start();
        using var socket = await ConnectRawAsync(server.EndPoint);
        await using Stream stream = tls
            ? await AuthenticatedAsync(new NetworkStream(socket, ownsSocket: false))
            : new NetworkStream(socket, ownsSocket: false);

        using var cts = Timeout(30);
        await stream.WriteAsync((byte[])[.. Header(Opcode.Count, 10, requestId: 1), .. new byte[10], .. Header(Opcode.Ping, 0, requestId: 2)], cts.Token);

        var refused = await ReadHeaderAsync(stream, cts.Token);
        Assert.Equal((1u, Status.BadRequest), (refused.RequestId, refused.Status));
        await stream.ReadExactlyAsync(new byte[refused.BodyLength], cts.Token);
        var ping = await ReadHeaderAsync(stream, cts.Token);
        Assert.Equal((2u, Status.Ok), (ping.RequestId, ping.Status));
        Assert.Contains(log.Lines, l => l.Contains("handler failed", StringComparison.Ordinal));
    }

    private static async Task<FrameHeader> ReadHeaderAsync(Stream stream, CancellationToken cancellationToken)
    {
        var bytes = new byte[FrameHeader.Size];
        await stream.ReadExactlyAsync(bytes, cancellationToken);
        Assert.Equal(Status.Ok, FrameHeader.TryRead(bytes, int.MaxValue, out var header));
        return header;
    }

    private static async Task<SslStream> AuthenticatedAsync(Stream inner)
    {
        var tls = new SslStream(inner, leaveInnerStreamOpen: false, (_, _, _, _) => true);
        await tls.AuthenticateAsClientAsync("localhost");
        return tls;
    }

    private static X509Certificate2 SelfSigned()
    {
        using var key = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        var request = new CertificateRequest("CN=localhost", key, HashAlgorithmName.SHA256);
        return request.CreateSelfSigned(DateTimeOffset.UtcNow.AddMinutes(-5), DateTimeOffset.UtcNow.AddDays(1));
    }

    /// <summary>Admits every Count by refusing it with a reply and then throwing; answers Ping.</summary>
    private sealed class ThrowingAdmitHandler : IFrameHandler
    {
        public int PrefixLength(in FrameHeader header) => header.Opcode == Opcode.Count ? 0 : -1;

        public FrameAdmission Admit(FrameContext frame)
        {
            frame.ReplyError(Status.BadRequest, "refused");
            throw new InvalidOperationException("thrown after its reply");
        }

        public void Handle(FrameContext frame) => frame.Reply(Status.Ok);

        public void OnDisconnected(FrameContext connection)
        {
        }
    }
}
