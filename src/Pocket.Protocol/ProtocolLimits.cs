namespace Pocket.Protocol;

/// <summary>Size limits checked before any body is buffered.</summary>
public sealed record ProtocolLimits
{
    /// <summary>Largest body of a control request (everything but extent writes).</summary>
    public int MaxControlBody { get; init; } = 1 << 20;

    /// <summary>Largest body of a <see cref="Opcode.WriteExtent"/> request: grant + offset + data.</summary>
    public int MaxDataBody { get; init; } = 64 << 20;

    /// <summary>Longest key, in UTF-8 bytes.</summary>
    public int MaxKeyBytes { get; init; } = 1024;

    /// <summary>Most path components ('/'-separated parts) of a key.</summary>
    public int MaxKeyComponents { get; init; } = 64;

    /// <summary>Largest object that may be sent inline to the metadata server.</summary>
    public int MaxSmallObject { get; init; } = 64 << 10;

    public static ProtocolLimits Default { get; } = new();

    public int MaxBodyFor(Opcode opcode) => opcode == Opcode.WriteExtent ? MaxDataBody : MaxControlBody;

    /// <summary>The body limit for any opcode, used by the frame reader before it knows the opcode is valid.</summary>
    public int MaxAnyBody => Math.Max(MaxControlBody, MaxDataBody);
}
