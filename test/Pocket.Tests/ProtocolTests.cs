using System.Buffers.Binary;
using Pocket.Protocol;

namespace Pocket.Tests;

/// <summary>Frame and body decoding over raw bytes, good and bad; no sockets.</summary>
public sealed class ProtocolTests
{
    private static byte[] ValidHeader(int length = 10)
    {
        var bytes = new byte[FrameHeader.Size];
        new FrameHeader(Opcode.Get, FrameFlags.None, Status.Ok, length, 5, JobToken.NewRandom()).Write(bytes);
        return bytes;
    }

    [Fact]
    public void ShortInputIsRejected()
    {
        var full = ValidHeader();
        for (var n = 0; n < FrameHeader.Size; n++)
        {
            Assert.Equal(Status.BadRequest, FrameHeader.TryRead(full.AsSpan(0, n), 1 << 20, out var header));
            Assert.Equal(default, header);
        }

        Assert.Equal(Status.Ok, FrameHeader.TryRead(full, 1 << 20, out _));
    }

    [Theory]
    [InlineData(0)]
    [InlineData(2)]
    [InlineData(0x7F)]
    [InlineData(0xFF)]
    public void OtherVersionsAreRejected(byte version)
    {
        var bytes = ValidHeader();
        bytes[0] = version;
        Assert.Equal(Status.VersionMismatch, FrameHeader.TryRead(bytes, 1 << 20, out var header));
        Assert.Equal(default, header);
    }

    [Theory]
    [InlineData(1025, 1024, Status.FrameTooLarge)]
    [InlineData(1024, 1024, Status.Ok)]
    [InlineData(0, 0, Status.Ok)]
    [InlineData(1, 0, Status.FrameTooLarge)]
    [InlineData(-1, 1024, Status.FrameTooLarge)]
    [InlineData(int.MinValue, int.MaxValue, Status.FrameTooLarge)]
    [InlineData(int.MaxValue, int.MaxValue, Status.Ok)]
    public void LengthsAreCheckedAgainstTheLimit(int length, int limit, Status expected)
    {
        var bytes = ValidHeader(length);
        Assert.Equal(expected, FrameHeader.TryRead(bytes, limit, out var header));
        Assert.Equal(expected == Status.Ok ? length : 0, header.BodyLength);
    }

    [Theory]
    [InlineData(1)]
    [InlineData(0x100)]
    [InlineData(0xFFFF)]
    public void NonzeroReservedIsRejected(ushort reserved)
    {
        var bytes = ValidHeader();
        BinaryPrimitives.WriteUInt16LittleEndian(bytes.AsSpan(6), reserved);
        Assert.Equal(Status.BadRequest, FrameHeader.TryRead(bytes, 1 << 20, out var header));
        Assert.Equal(default, header);
    }

    [Fact]
    public void RandomHeadersRoundTrip()
    {
        var random = new Random(1234);
        var bytes = new byte[FrameHeader.Size];
        for (var i = 0; i < 10_000; i++)
        {
            var header = new FrameHeader(
                (Opcode)random.Next(256),
                (FrameFlags)random.Next(65536),
                (Status)random.Next(65536),
                random.Next(),
                (uint)random.NextInt64(uint.MaxValue + 1L),
                new JobToken((ulong)random.NextInt64(), (ulong)random.NextInt64()));
            header.Write(bytes);
            Assert.Equal(Status.Ok, FrameHeader.TryRead(bytes, int.MaxValue, out var back));
            Assert.Equal(header, back);
        }
    }

    [Fact]
    public void RandomBytesNeverThrowAndOnlyVersionOneDecodes()
    {
        var random = new Random(99);
        var bytes = new byte[FrameHeader.Size + 8];
        for (var i = 0; i < 50_000; i++)
        {
            random.NextBytes(bytes);
            var length = random.Next(bytes.Length + 1);
            var status = FrameHeader.TryRead(bytes.AsSpan(0, length), 1 << 20, out var header);
            if (status == Status.Ok)
            {
                Assert.True(length >= FrameHeader.Size);
                Assert.Equal(FrameHeader.CurrentVersion, bytes[0]);
                Assert.InRange(header.BodyLength, 0, 1 << 20);
            }
            else
            {
                Assert.Contains(status, new[] { Status.BadRequest, Status.VersionMismatch, Status.FrameTooLarge });
            }
        }
    }

    [Fact]
    public void StringsEncodeAsUtf8WithTheirByteCountOnBothSidesOfTheOnePassLimit()
    {
        var random = new Random(11);
        char[] alphabet = ['a', '/', 'é', '€', '\ud83d', '\ude00', '\u0000', '\uffff'];
        foreach (var length in new[] { 0, 1, 2, 3, 100, 4095, 4096, 4097, 9000, 21_845 })
        {
            for (var round = 0; round < 5; round++)
            {
                // Lone surrogates included: both paths write U+FFFD for them, as Encoding.UTF8 does.
                var text = new string(Enumerable.Range(0, length).Select(_ => alphabet[random.Next(alphabet.Length)]).ToArray());
                var expected = System.Text.Encoding.UTF8.GetBytes(text);
                var body = new BodyWriter(16).U8(1).Str(text).U8(2).WrittenSpan;
                Assert.Equal(expected.Length, BinaryPrimitives.ReadUInt16LittleEndian(body[1..]));
                Assert.True(body[3..^1].SequenceEqual(expected), $"length {length}");
                Assert.Equal(2, body[^1]);
            }
        }

        Assert.Throws<ArgumentException>(() => new BodyWriter().Str(new string('€', 21_846)));
    }

    /// <summary>A body with every field kind, and the reads that decode it.</summary>
    private static byte[] EveryField() => new BodyWriter()
        .U8(7).U16(65_000).U32(4_000_000_000).I32(-5).U64(ulong.MaxValue).I64(long.MinValue).F64(-0.25)
        .Str("key/ünïcode").Blob(new byte[300]).Str("").Blob([]).Token(new JobToken(1, 2)).Bytes([9, 9, 9])
        .ToArray();

    private static bool ReadEveryField(ReadOnlySpan<byte> body, out string key)
    {
        var reader = new BodyReader(body);
        var ok = reader.U8() == 7;
        ok &= reader.U16() == 65_000;
        ok &= reader.U32() == 4_000_000_000;
        ok &= reader.I32() == -5;
        ok &= reader.U64() == ulong.MaxValue;
        ok &= reader.I64() == long.MinValue;
        ok &= reader.F64() == -0.25;
        key = reader.Str();
        ok &= reader.Blob().Length == 300;
        ok &= reader.Str().Length == 0;
        ok &= reader.Blob().IsEmpty;
        ok &= reader.Token() == new JobToken(1, 2);
        ok &= reader.Bytes(3).SequenceEqual(new byte[] { 9, 9, 9 });
        Assert.True(ok || reader.Failed, "a read returned a wrong value without failing");
        return !reader.Failed && reader.AtEnd;
    }

    [Fact]
    public void EveryTruncationFailsQuietly()
    {
        var body = EveryField();
        Assert.True(ReadEveryField(body, out var key));
        Assert.Equal("key/ünïcode", key);
        for (var n = 0; n < body.Length; n++)
        {
            // Never throws; a body cut anywhere is reported as failed, and no read before the cut lies.
            Assert.False(ReadEveryField(body.AsSpan(0, n), out _), $"a body cut to {n} of {body.Length} bytes decoded as whole");
        }
    }

    [Fact]
    public void ReadsAfterAFailureReturnDefaultsAndStayFailed()
    {
        var reader = new BodyReader([1, 2, 3]);
        Assert.Equal(0u, reader.U32());
        Assert.True(reader.Failed);

        // The bytes that were there are not handed out once the reader has failed.
        Assert.Equal(0, reader.U8());
        Assert.Equal(0, reader.U16());
        Assert.True(reader.Bytes(1).IsEmpty);
        Assert.Equal(string.Empty, reader.Str());
        Assert.True(reader.Failed);
    }

    [Fact]
    public void BadLengthsAndBadTextFail()
    {
        // A blob longer than int.MaxValue, a blob longer than the body, a negative byte count.
        var huge = new BodyReader([0xFF, 0xFF, 0xFF, 0xFF, 1, 2]);
        Assert.True(huge.Blob().IsEmpty);
        Assert.True(huge.Failed);

        var long1 = new BodyReader([10, 0, 0, 0, 1, 2]);
        Assert.True(long1.Blob().IsEmpty);
        Assert.True(long1.Failed);

        var negative = new BodyReader([1, 2, 3]);
        Assert.True(negative.Bytes(-1).IsEmpty);
        Assert.True(negative.Failed);

        // Invalid UTF-8 (a lone continuation byte, an overlong form, a surrogate) is a failure, not a '?'.
        foreach (var text in new byte[][] { [0x80], [0xC0, 0xAF], [0xED, 0xA0, 0x80], [0xFF] })
        {
            var reader = new BodyReader([(byte)text.Length, 0, .. text]);
            Assert.Equal(string.Empty, reader.Str());
            Assert.True(reader.Failed);
        }
    }

    [Fact]
    public void RandomBodiesNeverThrow()
    {
        var random = new Random(2024);
        var buffer = new byte[512];
        for (var i = 0; i < 20_000; i++)
        {
            random.NextBytes(buffer);
            var length = random.Next(buffer.Length + 1);
            var reader = new BodyReader(buffer.AsSpan(0, length));
            for (var step = 0; step < 12 && !reader.Failed; step++)
            {
                switch (random.Next(11))
                {
                    case 0: reader.U8(); break;
                    case 1: reader.U16(); break;
                    case 2: reader.U32(); break;
                    case 3: reader.I32(); break;
                    case 4: reader.U64(); break;
                    case 5: reader.I64(); break;
                    case 6: reader.F64(); break;
                    case 7: reader.Str(); break;
                    case 8: reader.Blob(); break;
                    case 9: reader.Token(); break;
                    default: reader.Bytes(random.Next(-2, 64)); break;
                }
            }

            Assert.InRange(reader.Remaining, 0, length);
        }
    }

    [Theory]
    [InlineData("a", true)]
    [InlineData("a/b/c", true)]
    [InlineData("..a/b.", true)]
    [InlineData("ünï/cödé", true)]
    [InlineData("", false)]
    [InlineData("/a", false)]
    [InlineData("a/", false)]
    [InlineData("a//b", false)]
    [InlineData(".", false)]
    [InlineData("a/./b", false)]
    [InlineData("a/..", false)]
    [InlineData("a\nb", false)]
    [InlineData("a\u0000b", false)]
    public void KeyRules(string key, bool valid) => Assert.Equal(valid, ObjectKey.IsValid(key, ProtocolLimits.Default, out _));

    [Fact]
    public void KeyLimits()
    {
        var limits = ProtocolLimits.Default;
        Assert.True(ObjectKey.IsValid(new string('k', limits.MaxKeyBytes), limits, out _));
        Assert.False(ObjectKey.IsValid(new string('k', limits.MaxKeyBytes + 1), limits, out _));

        // The byte limit counts UTF-8 bytes, not characters.
        Assert.False(ObjectKey.IsValid(new string('é', (limits.MaxKeyBytes / 2) + 1), limits, out _));
        Assert.True(ObjectKey.IsValid(string.Join('/', Enumerable.Repeat("p", limits.MaxKeyComponents)), limits, out _));
        Assert.False(ObjectKey.IsValid(string.Join('/', Enumerable.Repeat("p", limits.MaxKeyComponents + 1)), limits, out _));
    }

    [Theory]
    [InlineData("", true)]
    [InlineData("a", true)]
    [InlineData("a/", true)]
    [InlineData("a/b/", true)]
    [InlineData("/", false)]
    [InlineData("a//", false)]
    [InlineData("../", false)]
    public void PrefixRules(string prefix, bool valid) => Assert.Equal(valid, ObjectKey.IsValidPrefix(prefix, ProtocolLimits.Default, out _));

    [Fact]
    public void GrantsDoNotVerifyWithAnotherSecretOrAnyChangedField()
    {
        var secret = Enumerable.Range(0, 32).Select(i => (byte)i).ToArray();
        var grant = ExtentGrant.Sign(secret, 3, 9, 65536, 1 << 20, GrantRights.Read, 1_900_000_000_000);
        Assert.True(grant.Verify(secret));
        Assert.False(grant.Verify(new byte[32]));
        Assert.False((grant with { NodeId = 4 }).Verify(secret));
        Assert.False((grant with { Generation = 10 }).Verify(secret));
        Assert.False((grant with { Offset = 0 }).Verify(secret));
        Assert.False((grant with { Length = 2 << 20 }).Verify(secret));
        Assert.False((grant with { Rights = GrantRights.Read | GrantRights.Write }).Verify(secret));
        Assert.False((grant with { Expires = grant.Expires + 1 }).Verify(secret));
        Assert.True(grant.WithRights(secret, GrantRights.Write).Verify(secret));

        // Every single bit flipped in the wire form breaks it.
        var bytes = new byte[ExtentGrant.Size];
        grant.Write(bytes);
        for (var bit = 0; bit < bytes.Length * 8; bit++)
        {
            bytes[bit / 8] ^= (byte)(1 << (bit % 8));
            Assert.False(ExtentGrant.Read(bytes).Verify(secret), $"bit {bit} flipped still verifies");
            bytes[bit / 8] ^= (byte)(1 << (bit % 8));
        }
    }

    [Theory]
    [InlineData(null)]
    [InlineData("")]
    [InlineData("0102")]
    [InlineData("zz02030405060708090a0b0c0d0e0f10")]
    [InlineData("0102030405060708090a0b0c0d0e0f1011")]
    public void MalformedTokenTextIsRejected(string? text) => Assert.False(JobToken.TryParse(text, out _));

    [Fact]
    public void TokensRoundTripThroughText()
    {
        for (var i = 0; i < 100; i++)
        {
            var token = JobToken.NewRandom();
            Assert.False(token.IsNone);
            Assert.True(JobToken.TryParse(token.ToString(), out var back));
            Assert.Equal(token, back);
        }
    }

    [Fact]
    public void TierNamesRoundTripIgnoreCaseAndRefuseNumbersAndUnknownNames()
    {
        foreach (var tier in Enum.GetValues<NodeTier>())
        {
            Assert.True(NodeTierNames.TryParse(NodeTierNames.Name(tier), out var back));
            Assert.Equal(tier, back);
            Assert.True(NodeTierNames.TryParse(NodeTierNames.Name(tier).ToUpperInvariant(), out back));
            Assert.Equal(tier, back);
        }

        Assert.Equal(Enum.GetValues<NodeTier>(), NodeTierNames.All);
        Assert.Equal("dram", NodeTier.Dram.Name());
        foreach (var bad in new[] { "1", "tape", "", " ", null })
        {
            Assert.False(NodeTierNames.TryParse(bad, out _));
        }

        Assert.Equal("unknown tier 'tape' (tiers: dram, ssd, hdd)", NodeTierNames.Unknown("tape"));
    }
}
