using System.Net;
using System.Security.Cryptography.X509Certificates;
using Pocket.Protocol;

namespace Pocket.Networking;

/// <summary>Listener settings shared by every binary-protocol role.</summary>
public sealed record FrameServerOptions
{
    /// <summary>Where to listen; port 0 picks a free port (see <see cref="FrameServer.EndPoint"/>).</summary>
    public IPEndPoint EndPoint { get; init; } = new(IPAddress.Loopback, 0);

    public ProtocolLimits Limits { get; init; } = ProtocolLimits.Default;

    /// <summary>Connections beyond this are closed at once.</summary>
    public int MaxConnections { get; init; } = 1024;

    /// <summary>When set, every connection is wrapped in TLS with this certificate.</summary>
    public X509Certificate2? Certificate { get; init; }
}
