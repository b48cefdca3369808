using System.Net;

namespace Pocket.Networking;

/// <summary>
/// A role could not listen because another process (or another role) already listens on its address. Thrown at once
/// by start-up: the port is never shared, so a second server cannot quietly take half of the first one's connections.
/// </summary>
public sealed class PortInUseException(string role, EndPoint endPoint, Exception? inner = null)
    : IOException($"the {role} cannot listen on {endPoint}: the port is in use by another process", inner)
{
    /// <summary>The role that could not start ("metadata", "storage", "controller", "gateway").</summary>
    public string Role { get; } = role;

    /// <summary>The address it asked for.</summary>
    public EndPoint EndPoint { get; } = endPoint;

    /// <summary>The port it asked for.</summary>
    public int Port => EndPoint is IPEndPoint ip ? ip.Port : 0;
}
