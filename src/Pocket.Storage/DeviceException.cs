namespace Pocket.Storage;

/// <summary>A device failed one request (no space, I/O error). The device, and the node, keep serving.</summary>
public sealed class DeviceException : Exception
{
    public DeviceException(string message, Exception? inner = null) : base(message, inner)
    {
    }

    /// <summary>True when the failure was a full disk.</summary>
    public bool IsNoSpace { get; init; }
}
