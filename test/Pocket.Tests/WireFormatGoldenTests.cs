using Pocket.Protocol;

namespace Pocket.Tests;

/// <summary>
/// Frozen wire numbers and byte layouts. Clients in other languages and servers of other versions depend on
/// them: if one of these fails, the change broke the protocol; add new numbers instead of changing old ones.
/// </summary>
public sealed class WireFormatGoldenTests
{
    private static void AssertFrozen<TEnum>(params (string Name, ulong Value)[] frozen)
        where TEnum : struct, Enum
    {
        foreach (var (name, value) in frozen)
        {
            Assert.True(Enum.TryParse<TEnum>(name, out var parsed), $"{typeof(TEnum).Name}.{name} was removed or renamed");
            Assert.True(Convert.ToUInt64(parsed, null) == value, $"{typeof(TEnum).Name}.{name} is {Convert.ToUInt64(parsed, null)}, frozen as {value}");
        }

        // A number added later must not reuse a frozen one.
        var byValue = Enum.GetValues<TEnum>().GroupBy(v => Convert.ToUInt64(v, null)).Where(g => g.Count() > 1).Select(g => g.Key).ToList();
        Assert.True(byValue.Count == 0, $"{typeof(TEnum).Name} has names sharing a number: {string.Join(", ", byValue)}");
        var frozenValues = frozen.Select(f => f.Value).ToHashSet();
        foreach (var value in Enum.GetValues<TEnum>())
        {
            var number = Convert.ToUInt64(value, null);
            var name = value.ToString();
            Assert.True(frozen.Any(f => f.Name == name) || !frozenValues.Contains(number), $"{typeof(TEnum).Name}.{name} reuses frozen number {number}");
        }
    }

    [Fact]
    public void OpcodeNumbersAreFrozen() => AssertFrozen<Opcode>(
        ("Ping", 1), ("RegisterNode", 2), ("Heartbeat", 3), ("RegisterJob", 4), ("DeregisterJob", 5), ("SetWeights", 6),
        ("ListNodes", 7), ("JobStats", 8), ("DrainNode", 9), ("ActivateNode", 10), ("ServerLoad", 11), ("PutSmall", 20), ("Get", 21), ("Create", 22), ("Allocate", 23), ("Commit", 24),
        ("Abort", 25), ("Lookup", 26), ("Delete", 27), ("List", 28), ("Count", 29), ("WriteExtent", 40), ("ReadExtent", 41), ("CopyExtent", 42),
        ("RevokeExtents", 43), ("ReleaseShare", 44), ("AddShare", 45));

    [Fact]
    public void StatusNumbersAreFrozen() => AssertFrozen<Status>(
        ("Ok", 0), ("NotFound", 1), ("Exists", 2), ("CapacityExceeded", 3), ("NodeLost", 4), ("BadRequest", 5),
        ("UnknownOpcode", 6), ("FrameTooLarge", 7), ("Unauthorized", 8), ("VersionMismatch", 9), ("NoNodes", 10),
        ("StaleGrant", 11), ("InternalError", 12), ("InvalidKey", 13), ("ShuttingDown", 14), ("IoError", 15), ("NodeUnavailable", 16), ("QuotaExceeded", 17),
        ("JobLost", 18));

    [Fact]
    public void FrameFlagBitsAreFrozen() => AssertFrozen<FrameFlags>(
        ("None", 0), ("DeleteAfterRead", 1), ("KeepAfterJob", 2), ("Recursive", 4), ("NodeAddresses", 8), ("Reply", 0x8000));

    [Fact]
    public void TierStateAndRightsNumbersAreFrozen()
    {
        AssertFrozen<NodeTier>(("Dram", 1), ("Ssd", 2), ("Hdd", 3));
        AssertFrozen<NodeState>(("Live", 1), ("Draining", 2), ("Dead", 3), ("Drained", 4), ("Standby", 5));
        AssertFrozen<GrantRights>(("None", 0), ("Read", 1), ("Write", 2));
    }

    [Fact]
    public void EnumStorageSizesAreFrozen()
    {
        Assert.Equal(typeof(byte), Enum.GetUnderlyingType(typeof(Opcode)));
        Assert.Equal(typeof(ushort), Enum.GetUnderlyingType(typeof(Status)));
        Assert.Equal(typeof(ushort), Enum.GetUnderlyingType(typeof(FrameFlags)));
        Assert.Equal(typeof(byte), Enum.GetUnderlyingType(typeof(NodeTier)));
        Assert.Equal(typeof(byte), Enum.GetUnderlyingType(typeof(NodeState)));
        Assert.Equal(typeof(uint), Enum.GetUnderlyingType(typeof(GrantRights)));
    }

    private static readonly JobToken KnownToken = new(0x0807060504030201, 0x100F0E0D0C0B0A09);

    // version 01 | opcode 0x15 (Get) | flags 0x8001 | status 0x0001 | reserved 0 | length 0x01020304
    // | request id 0xA1B2C3D4 | token 01..10, every field little-endian.
    private const string KnownHeaderHex = "01" + "15" + "0180" + "0100" + "0000" + "04030201" + "D4C3B2A1" + "0102030405060708090A0B0C0D0E0F10";

    [Fact]
    public void FrameHeaderLayoutIsFrozen()
    {
        Assert.Equal(32, FrameHeader.Size);
        Assert.Equal(1, FrameHeader.CurrentVersion);
        var header = new FrameHeader(Opcode.Get, FrameFlags.DeleteAfterRead | FrameFlags.Reply, Status.NotFound, 0x01020304, 0xA1B2C3D4, KnownToken);
        var bytes = new byte[FrameHeader.Size];
        header.Write(bytes);
        Assert.Equal(KnownHeaderHex, Convert.ToHexString(bytes));

        Assert.Equal(Status.Ok, FrameHeader.TryRead(Convert.FromHexString(KnownHeaderHex), int.MaxValue, out var decoded));
        Assert.Equal(header, decoded);
        Assert.True(decoded.IsReply);
    }

    [Fact]
    public void JobTokenTextAndBytesAreFrozen()
    {
        var bytes = new byte[JobToken.Size];
        KnownToken.Write(bytes);
        Assert.Equal("0102030405060708090A0B0C0D0E0F10", Convert.ToHexString(bytes));
        Assert.Equal("0102030405060708090a0b0c0d0e0f10", KnownToken.ToString());
        Assert.True(JobToken.TryParse("0102030405060708090a0b0c0d0e0f10", out var parsed));
        Assert.Equal(KnownToken, parsed);
    }

    [Fact]
    public void ExtentGrantLayoutAndSignatureAreFrozen()
    {
        // node u32 | generation u32 | offset i64 | length i32 | rights u32 | expires i64 | HMAC-SHA256 truncated to 16 bytes.
        // Changed deliberately once: the expiry joined the signed part (40 -> 48 bytes).
        var secret = Enumerable.Repeat((byte)0x11, 32).ToArray();
        var grant = ExtentGrant.Sign(secret, 0x01020304, 0x05060708, 0x1122334455667788, 0x10000, GrantRights.Read | GrantRights.Write, 0x0000_01BA_2C3D_4E5F);
        var bytes = new byte[ExtentGrant.Size];
        grant.Write(bytes);
        Assert.Equal(48, ExtentGrant.Size);
        Assert.Equal("040302010807060588776655443322110000010003000000" + "5F4E3D2CBA010000" + "8B436258249517F5021DF340808F0B3E", Convert.ToHexString(bytes));
        Assert.Equal(grant, ExtentGrant.Read(bytes));
        Assert.True(ExtentGrant.Read(bytes).Verify(secret));
    }

    [Fact]
    public void BodyEncodingsAreFrozen()
    {
        var body = new BodyWriter()
            .U8(0xAB)
            .U16(0x0102)
            .U32(0x03040506)
            .I32(-2)
            .U64(0x0708090A0B0C0D0E)
            .I64(-3)
            .F64(1.5)
            .Str("hé")
            .Blob([1, 2, 3])
            .Token(KnownToken);
        const string expected = "AB" + "0201" + "06050403" + "FEFFFFFF" + "0E0D0C0B0A090807" + "FDFFFFFFFFFFFFFF" + "000000000000F83F"
            + "0300" + "68C3A9" + "03000000" + "010203" + "0102030405060708090A0B0C0D0E0F10";
        Assert.Equal(expected, Convert.ToHexString(body.WrittenSpan));

        var reader = new BodyReader(Convert.FromHexString(expected));
        Assert.Equal(0xAB, reader.U8());
        Assert.Equal(0x0102, reader.U16());
        Assert.Equal(0x03040506u, reader.U32());
        Assert.Equal(-2, reader.I32());
        Assert.Equal(0x0708090A0B0C0D0EUL, reader.U64());
        Assert.Equal(-3, reader.I64());
        Assert.Equal(1.5, reader.F64());
        Assert.Equal("hé", reader.Str());
        Assert.Equal(new byte[] { 1, 2, 3 }, reader.Blob().ToArray());
        Assert.Equal(KnownToken, reader.Token());
        Assert.True(reader.AtEnd);
        Assert.False(reader.Failed);
    }

    [Fact]
    public void LimitsAreFrozen()
    {
        // Peers size their buffers by these; a smaller limit would refuse frames old clients still send.
        var limits = ProtocolLimits.Default;
        Assert.Equal(1 << 20, limits.MaxControlBody);
        Assert.Equal(64 << 20, limits.MaxDataBody);
        Assert.Equal(1024, limits.MaxKeyBytes);
        Assert.Equal(64, limits.MaxKeyComponents);
        Assert.Equal(64 << 10, limits.MaxSmallObject);
    }
}
