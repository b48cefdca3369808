using Pocket.Protocol;
using Pocket.Protocol.Messages;

namespace Pocket.Tests;

/// <summary>
/// One byte-exact round trip per message: each expected hex string is written out field by field from the layout
/// in docs/protocol.md, so a message type that changed what goes on the wire fails here (add fields or opcodes
/// instead). Every decoder also refuses each truncation of its body and a trailing byte.
/// </summary>
public sealed class MessageGoldenTests
{
    private static readonly JobToken KnownToken = new(0x0807060504030201, 0x100F0E0D0C0B0A09);
    private static readonly byte[] Secret = Enumerable.Repeat((byte)0x11, 32).ToArray();

    // The grant of ExtentGrantLayoutAndSignatureAreFrozen: node 0x01020304, generation 0x05060708, offset 0x1122334455667788, length 64 KiB, read+write,
    // expiring at 0x1BA2C3D4E5F ms after the epoch.
    private static readonly ExtentGrant KnownGrant = ExtentGrant.Sign(Secret, 0x01020304, 0x05060708, 0x1122334455667788, 0x10000, GrantRights.Read | GrantRights.Write, 0x0000_01BA_2C3D_4E5F);
    private const string KnownGrantHex = "040302010807060588776655443322110000010003000000" + "5F4E3D2CBA010000" + "8B436258249517F5021DF340808F0B3E";

    // "a/b" as a wire string: u16 length 3, then the UTF-8.
    private const string KeyHex = "0300" + "612F62";

    private static byte[] Encode(Action<BodyWriter> write)
    {
        var body = new BodyWriter();
        write(body);
        return body.ToArray();
    }

    private static void AssertBytes(string expectedHex, byte[] actual) => Assert.Equal(expectedHex, Convert.ToHexString(actual));

    private delegate bool Decoder(ReadOnlySpan<byte> body);

    /// <summary>
    /// Every strict prefix of the body and the body with a byte appended are refused, except the prefix lengths in
    /// <paramref name="accepted"/> (a shorter form an older peer sends, or a part that runs to the end), which are read.
    /// </summary>
    private static void AssertRefusesDamage(byte[] body, Decoder decode, bool trailingAllowed = false, int[]? accepted = null)
    {
        Assert.True(decode(body));
        for (var length = 0; length < body.Length; length++)
        {
            var ok = accepted?.Contains(length) == true;
            Assert.True(decode(body.AsSpan(0, length)) == ok, $"a body cut to {length} of {body.Length} bytes was {(ok ? "refused" : "accepted")}");
        }

        if (!trailingAllowed)
        {
            Assert.False(decode([.. body, 0x00]), "a body with a trailing byte was accepted");
        }
    }

    [Fact]
    public void WriteExtentHead()
    {
        var bytes = Encode(b => WriteExtentRequest.Write(b, KnownGrant, 7));
        AssertBytes(KnownGrantHex + "07000000", bytes);
        Assert.Equal(WriteExtentRequest.HeadSize, bytes.Length);
        Assert.True(WriteExtentRequest.TryRead(bytes, out var grant, out var within));
        Assert.Equal((KnownGrant, 7), (grant, within));
        AssertRefusesDamage(bytes, b => WriteExtentRequest.TryRead(b, out _, out _));
    }

    [Fact]
    public void ReadExtent()
    {
        var bytes = Encode(b => ReadExtentRequest.Write(b, KnownGrant, 7, 0x1000));
        AssertBytes(KnownGrantHex + "07000000" + "00100000", bytes);
        Assert.True(ReadExtentRequest.TryRead(bytes, out var grant, out var within, out var length));
        Assert.Equal((KnownGrant, 7, 0x1000), (grant, within, length));
        AssertRefusesDamage(bytes, b => ReadExtentRequest.TryRead(b, out _, out _, out _));
    }

    [Fact]
    public void CopyExtent()
    {
        var source = ExtentGrant.Sign(Secret, 9, 3, 0x20000, 0x30000, GrantRights.Read, 0x0000_01BA_2C3D_4E5F);
        var bytes = Encode(b => CopyExtentRequest.Write(b, KnownGrant, source, 0x10000, "h1", 0x1F90));

        // write grant | read grant | offset inside the source i32 | port u16 | host (u16 length, UTF-8).
        AssertBytes(KnownGrantHex + Convert.ToHexString(Encode(b => GrantList.WriteGrant(b, source))) + "00000100" + "901F" + "0200" + "6831", bytes);
        Assert.Equal("09000000" + "03000000" + "0000020000000000" + "00000300" + "01000000", Convert.ToHexString(bytes, ExtentGrant.Size, 24));
        Assert.True(CopyExtentRequest.TryRead(bytes, out var request));
        Assert.Equal((KnownGrant, source, 0x10000, (ushort)0x1F90, "6831"), (request.Target, request.Source, request.Within, request.Port, Convert.ToHexString(request.HostUtf8)));
        Assert.True(CopyExtentRequest.TryReadTarget(bytes.AsSpan(0, CopyExtentRequest.WriteGrantSize), out var target));
        Assert.Equal(KnownGrant, target);
        AssertRefusesDamage(bytes, b => CopyExtentRequest.TryRead(b, out _));
        Assert.False(CopyExtentRequest.TryRead(Encode(b => CopyExtentRequest.Write(b, KnownGrant, source, 0, "", 1)), out _), "an empty host was accepted");
        Assert.Throws<ArgumentException>(() => Encode(b => CopyExtentRequest.Write(b, KnownGrant, source, 0, new string('h', 256), 1)));
    }

    [Fact]
    public void PutSmall()
    {
        var bytes = Encode(b =>
        {
            PutSmallRequest.WriteHead(b, "a/b", 3);
            b.Bytes([9, 8, 7]);
        });
        AssertBytes(KeyHex + "03000000" + "090807", bytes);
        Assert.True(PutSmallRequest.TryRead(bytes, out var request));
        Assert.Equal("a/b", request.Key);
        Assert.Equal(new byte[] { 9, 8, 7 }, request.Data.ToArray());
        AssertRefusesDamage(bytes, b => PutSmallRequest.TryRead(b, out _));
    }

    [Fact]
    public void GetRequestRoundTrips()
    {
        var bytes = Encode(b => GetRequest.Write(b, "a/b", 5, -1));
        AssertBytes(KeyHex + "0500000000000000" + "FFFFFFFFFFFFFFFF", bytes);
        Assert.True(GetRequest.TryRead(bytes, out var request));
        Assert.Equal("612F62", Convert.ToHexString(request.KeyUtf8));
        Assert.Equal((5L, -1L), (request.Offset, request.Length));
        AssertRefusesDamage(bytes, b => GetRequest.TryRead(b, out _));
    }

    [Fact]
    public void GetReplyInline()
    {
        var bytes = Encode(b => GetReply.WriteInline(b, 10, [1, 2]));
        AssertBytes("00" + "0A00000000000000" + "0102", bytes);
        Assert.True(GetReply.TryRead(bytes, out var reply));
        Assert.True(reply.IsInline);
        Assert.Equal(10, reply.Size);
        Assert.Equal(new byte[] { 1, 2 }, reply.Inline.ToArray());

        // The inline range runs to the end of the body, so only cuts into the head are refused.
        AssertRefusesDamage(bytes, b => GetReply.TryRead(b, out var r) && r.IsInline, trailingAllowed: true, accepted: [9, 10]);
    }

    [Fact]
    public void GetReplyExtents()
    {
        var bytes = Encode(b =>
        {
            GetReply.WriteExtentsHead(b, 0x10000, 42);
            GrantList.WriteCount(b, 1);
            GrantList.WriteGrant(b, KnownGrant);
        });
        AssertBytes("01" + "0000010000000000" + "2A00000000000000" + "01000000" + KnownGrantHex, bytes);
        Assert.True(GetReply.TryRead(bytes, out var reply));
        Assert.False(reply.IsInline);
        Assert.Equal((0x10000L, 42UL, 1), (reply.Size, reply.Release, reply.Grants.Count));
        Assert.Equal(KnownGrant, reply.Grants[0]);
        AssertRefusesDamage(bytes, b => GetReply.TryRead(b, out var r) && !r.IsInline);
        Assert.False(GetReply.TryRead(Convert.FromHexString("02" + "0000000000000000" + "0000000000000000" + "00000000"), out _), "an unknown kind was accepted");
    }

    [Fact]
    public void GrantListRefusesACountLargerThanTheBody()
    {
        var reader = new BodyReader(Convert.FromHexString("FFFFFFFF" + KnownGrantHex));
        Assert.False(GrantList.TryRead(ref reader, out _));
    }

    [Fact]
    public void Create()
    {
        var bytes = Encode(b => CreateRequest.Write(b, "a/b", -1));
        AssertBytes(KeyHex + "FFFFFFFFFFFFFFFF", bytes);
        Assert.True(CreateRequest.TryRead(bytes, out var request));
        Assert.Equal(("a/b", -1L), (request.Key, request.SizeHint));
        AssertRefusesDamage(bytes, b => CreateRequest.TryRead(b, out _));

        var reply = Encode(b =>
        {
            CreateReply.WriteHead(b, 3);
            GrantList.WriteCount(b, 1);
            GrantList.WriteGrant(b, KnownGrant);
        });
        AssertBytes("0300000000000000" + "01000000" + KnownGrantHex, reply);
        Assert.True(CreateReply.TryRead(reply, out var created));
        Assert.Equal((3UL, 1), (created.Handle, created.Grants.Count));
        Assert.Equal(KnownGrant, created.Grants[0]);
        AssertRefusesDamage(reply, b => CreateReply.TryRead(b, out _));
        Assert.Empty(created.Nodes);
    }

    [Fact]
    public void CreateReplyWithNodeAddresses()
    {
        var reply = Encode(b =>
        {
            CreateReply.WriteHead(b, 3);
            GrantList.WriteCount(b, 1);
            GrantList.WriteGrant(b, KnownGrant);
            NodeAddressList.Write(b, [new NodeAddress(5, "h", 0x1F90)]);
        });
        AssertBytes("0300000000000000" + "01000000" + KnownGrantHex + "0100" + "05000000" + "010068" + "901F", reply);
        Assert.True(CreateReply.TryRead(reply, out var created));
        Assert.Equal(KnownGrant, created.Grants[0]);
        Assert.Equal([new NodeAddress(5, "h", 8080)], created.Nodes);

        // Cut anywhere inside the section it is refused; cut before it, it is a reply without one (an older server's).
        var withoutSection = reply.Length - 2 - 4 - 3 - 2;
        AssertRefusesDamage(reply, b => CreateReply.TryRead(b, out _), accepted: [withoutSection]);
    }

    [Fact]
    public void GetReplyWithNodeAddresses()
    {
        var reply = Encode(b =>
        {
            GetReply.WriteExtentsHead(b, 100, 0);
            GrantList.WriteCount(b, 1);
            GrantList.WriteGrant(b, KnownGrant);
            NodeAddressList.Write(b, [new NodeAddress(5, "h", 8080), new NodeAddress(6, "", 1)]);
        });
        Assert.True(GetReply.TryRead(reply, out var got));
        Assert.Equal([new NodeAddress(5, "h", 8080), new NodeAddress(6, "", 1)], got.Nodes);
        var withoutSection = reply.Length - 2 - (4 + 3 + 2) - (4 + 2 + 2);
        AssertRefusesDamage(reply, b => GetReply.TryRead(b, out _), accepted: [withoutSection]);
    }

    [Fact]
    public void Allocate()
    {
        var bytes = Encode(b => AllocateRequest.Write(b, 3, 0x20000));
        AssertBytes("0300000000000000" + "0000020000000000", bytes);
        Assert.True(AllocateRequest.TryRead(bytes, out var request));
        Assert.Equal(new AllocateRequest(3, 0x20000), request);
        AssertRefusesDamage(bytes, b => AllocateRequest.TryRead(b, out _));

        var reply = Encode(b =>
        {
            GrantList.WriteCount(b, 1);
            GrantList.WriteGrant(b, KnownGrant);
        });
        AssertBytes("01000000" + KnownGrantHex, reply);
        Assert.True(AllocateReply.TryRead(reply, out var grants));
        Assert.Equal(KnownGrant, grants[0]);
        AssertRefusesDamage(reply, b => AllocateReply.TryRead(b, out _));
    }

    [Fact]
    public void Commit()
    {
        var bytes = Encode(b => CommitRequest.Write(b, 3, 100));
        AssertBytes("0300000000000000" + "6400000000000000", bytes);
        Assert.True(CommitRequest.TryRead(bytes, out var request));
        Assert.Equal(new CommitRequest(3, 100), request);
        AssertRefusesDamage(bytes, b => CommitRequest.TryRead(b, out _));
    }

    [Fact]
    public void Abort()
    {
        var bytes = Encode(b => AbortRequest.Write(b, 3));
        AssertBytes("0300000000000000", bytes);
        Assert.True(AbortRequest.TryRead(bytes, out var request));
        Assert.Equal(3UL, request.Handle);
        AssertRefusesDamage(bytes, b => AbortRequest.TryRead(b, out _));
    }

    [Fact]
    public void Lookup()
    {
        var bytes = Encode(b => LookupRequest.Write(b, "a/b"));
        AssertBytes(KeyHex, bytes);
        Assert.True(LookupRequest.TryRead(bytes, out var request));
        Assert.Equal("612F62", Convert.ToHexString(request.KeyUtf8));
        AssertRefusesDamage(bytes, b => LookupRequest.TryRead(b, out _));

        var reply = Encode(b =>
        {
            LookupReply.WriteHead(b, 0x10000, inline: false, FrameFlags.KeepAfterJob, 1);
            LookupReply.WriteExtent(b, new LookupExtent(2, NodeState.Draining, 0x8000, 0x10000));
        });

        // size i64 | inline u8 | flags u16 | count u32 | node u32, state u8, offset i64, length i32.
        AssertBytes("0000010000000000" + "00" + "0200" + "01000000" + "02000000" + "02" + "0080000000000000" + "00000100", reply);
        Assert.True(LookupReply.TryRead(reply, out var looked));
        Assert.Equal((0x10000L, false, FrameFlags.KeepAfterJob, 1), (looked.Size, looked.Inline, looked.Flags, looked.Count));
        Assert.Equal(new LookupExtent(2, NodeState.Draining, 0x8000, 0x10000), looked[0]);
        AssertRefusesDamage(reply, b => LookupReply.TryRead(b, out _));
    }

    [Fact]
    public void Delete()
    {
        var bytes = Encode(b => DeleteRequest.Write(b, "a/b"));
        AssertBytes(KeyHex, bytes);
        Assert.True(DeleteRequest.TryRead(bytes, out var request));
        Assert.Equal("a/b", request.Key);
        AssertRefusesDamage(bytes, b => DeleteRequest.TryRead(b, out _));

        var reply = new byte[DeleteReply.Size];
        DeleteReply.Write(reply, 5);
        AssertBytes("0500000000000000", reply);
        Assert.True(DeleteReply.TryRead(reply, out var deleted));
        Assert.Equal(5, deleted);
        AssertRefusesDamage(reply, b => DeleteReply.TryRead(b, out _));
    }

    [Fact]
    public void Count()
    {
        var bytes = Encode(b => CountRequest.Write(b, "a/b"));
        AssertBytes(KeyHex, bytes);
        Assert.True(CountRequest.TryRead(bytes, out var request));
        Assert.Equal("a/b", request.Prefix);
        AssertRefusesDamage(bytes, b => CountRequest.TryRead(b, out _));

        var reply = new byte[CountReply.Size];
        CountReply.Write(reply, 6);
        AssertBytes("0600000000000000", reply);
        Assert.True(CountReply.TryRead(reply, out var count));
        Assert.Equal(6, count);
        AssertRefusesDamage(reply, b => CountReply.TryRead(b, out _));
    }

    [Fact]
    public void List()
    {
        var bytes = Encode(b => ListRequest.Write(b, "a/", "a/b", 10, delimited: true));
        AssertBytes("0200" + "612F" + KeyHex + "0A000000" + "01", bytes);
        Assert.True(ListRequest.TryRead(bytes, out var request));
        Assert.Equal(("a/", "a/b", 10, true), (request.Prefix, request.StartAfter, request.Limit, request.Delimited));
        AssertRefusesDamage(bytes, b => ListRequest.TryRead(b, out _));

        var reply = Encode(b =>
        {
            var begin = ListReply.Begin(b);
            ListReply.WriteEntry(b, "a/b", 7, isPrefix: false);
            ListReply.WriteEntry(b, "a/c/", 0, isPrefix: true);
            ListReply.End(b, begin, 2, "a/c/");
        });

        // count u32 | (key, size i64, is-prefix u8) per entry | next start-after.
        AssertBytes("02000000" + KeyHex + "0700000000000000" + "00" + "0400" + "612F632F" + "0000000000000000" + "01" + "0400" + "612F632F", reply);
        Assert.True(ListReply.TryRead(reply, out var page));
        Assert.Equal(2, page.Count);
        Assert.Equal("612F632F", Convert.ToHexString(page.NextStartAfterUtf8));
        var entries = new List<(string, long, bool)>();
        foreach (var entry in page)
        {
            entries.Add((System.Text.Encoding.UTF8.GetString(entry.KeyUtf8), entry.Size, entry.IsPrefix));
        }

        Assert.Equal(new List<(string, long, bool)> { ("a/b", 7L, false), ("a/c/", 0L, true) }, entries);
        AssertRefusesDamage(reply, b => ListReply.TryRead(b, out _));
    }

    [Fact]
    public void JobStats()
    {
        var bytes = Encode(b => JobStatsRequest.Write(b, "job-1"));
        AssertBytes("0500" + "6A6F622D31", bytes);
        Assert.True(JobStatsRequest.TryRead(bytes, out var id));
        Assert.Equal("job-1", id);
        AssertRefusesDamage(bytes, b => JobStatsRequest.TryRead(b, out _));

        var stats = new JobStatsReply("job-1", 1, 2, 3, 4) { Tier = NodeTier.Ssd, TierBytes = [0, 5, 6, 7] };
        var reply = Encode(b => JobStatsReply.Write(b, stats));

        // id | objects, block bytes, inline bytes, requests i64 | tier u8 | tier count u8 | dram, ssd, hdd bytes i64.
        AssertBytes("0500" + "6A6F622D31" + "0100000000000000" + "0200000000000000" + "0300000000000000" + "0400000000000000"
            + "02" + "03" + "0500000000000000" + "0600000000000000" + "0700000000000000", reply);
        Assert.True(JobStatsReply.TryRead(reply, out var read));
        Assert.Equal((stats.JobId, stats.Objects, stats.BlockBytes, stats.InlineBytes, stats.Requests, stats.Tier), (read.JobId, read.Objects, read.BlockBytes, read.InlineBytes, read.Requests, read.Tier));
        Assert.Equal(stats.TierBytes, read.TierBytes);

        // An older server stops after the requests: the tier section is optional, a cut inside it is not.
        Assert.True(JobStatsReply.TryRead(reply.AsSpan(0, 7 + 32), out var old));
        Assert.Null(old.Tier);
        AssertRefusesDamage(reply, b => JobStatsReply.TryRead(b, out _), accepted: [7 + 32]);
    }

    [Fact]
    public void JobStatsWithQuota()
    {
        var stats = new JobStatsReply("j", 1, 2, 3, 4) { Tier = NodeTier.Dram, TierBytes = [0, 5], KeyBytes = 8, Quota = new JobQuota(9, 10, 11) };
        var reply = Encode(b => JobStatsReply.Write(b, stats));

        // ... | tier u8 | tier count u8 | dram bytes i64 | key bytes i64 | max bytes, max objects, max key bytes i64.
        var tierEnd = 3 + 32 + 2 + 8;
        AssertBytes("0100" + "6A" + "0100000000000000" + "0200000000000000" + "0300000000000000" + "0400000000000000"
            + "01" + "01" + "0500000000000000" + "0800000000000000" + "0900000000000000" + "0A00000000000000" + "0B00000000000000", reply);
        Assert.True(JobStatsReply.TryRead(reply, out var read));
        Assert.Equal((8L, new JobQuota(9, 10, 11)), (read.KeyBytes, read.Quota));

        // An older server stops after the tiers (or the requests): no quota; a cut inside the quota is refused.
        Assert.True(JobStatsReply.TryRead(reply.AsSpan(0, tierEnd), out var old));
        Assert.Equal((0L, (JobQuota?)null), (old.KeyBytes, old.Quota));
        AssertRefusesDamage(reply, b => JobStatsReply.TryRead(b, out _), accepted: [3 + 32, tierEnd]);
    }

    [Fact]
    public void ReleaseShareAndAddShare()
    {
        var release = Encode(b => ReleaseShareRequest.Write(b, 0x80000002, 5));
        AssertBytes("02000080" + "05000000", release);
        Assert.True(ReleaseShareRequest.TryRead(release, out var nodeId, out var count));
        Assert.Equal((0x80000002u, 5), (nodeId, count));
        AssertRefusesDamage(release, b => ReleaseShareRequest.TryRead(b, out _, out _));
        Assert.False(ReleaseShareRequest.TryRead(Encode(b => ReleaseShareRequest.Write(b, 1, 65)), out _, out _));

        var mask = new byte[ShareMask.Size];
        ShareMask.Write(mask, 0x8000000000000001);
        AssertBytes("0100000000000080", mask);
        Assert.True(ShareMask.TryRead(mask, out var released));
        Assert.Equal(0x8000000000000001UL, released);
        AssertRefusesDamage(mask, b => ShareMask.TryRead(b, out _));

        var add = Encode(b => AddShareRequest.Write(b, 0x80000002, 0xF0));
        AssertBytes("02000080" + "F000000000000000", add);
        Assert.True(AddShareRequest.TryRead(add, out var addId, out var added));
        Assert.Equal((0x80000002u, 0xF0UL), (addId, added));
        AssertRefusesDamage(add, b => AddShareRequest.TryRead(b, out _, out _));
    }

    [Fact]
    public void RegisterNode()
    {
        var bytes = Encode(b => RegisterNodeRequest.Write(b, NodeTier.Ssd, "h", 0x1F90, 1 << 20, 4096, Secret, standby: true));
        var fixedHex = "02" + "0100" + "68" + "901F" + "0000100000000000" + "00100000" + Convert.ToHexString(Secret);
        AssertBytes(fixedHex + "01", bytes);
        Assert.True(RegisterNodeRequest.TryRead(bytes, out var request));
        Assert.Equal((NodeTier.Ssd, "h", (ushort)0x1F90, 1L << 20, 4096, true), (request.Tier, request.Host, request.Port, request.Capacity, request.BlockSize, request.Standby));
        Assert.Equal(Secret, request.Secret.ToArray());

        // A live node writes no flags byte, as older nodes did.
        var live = Encode(b => RegisterNodeRequest.Write(b, NodeTier.Ssd, "h", 0x1F90, 1 << 20, 4096, Secret, standby: false));
        AssertBytes(fixedHex, live);
        Assert.True(RegisterNodeRequest.TryRead(live, out var liveRequest));
        Assert.False(liveRequest.Standby);
        AssertRefusesDamage(bytes, b => RegisterNodeRequest.TryRead(b, out _), accepted: [live.Length]);

        // A node serving several metadata servers adds the flags byte, its proposed id and its share.
        var shared = Encode(b => RegisterNodeRequest.Write(b, NodeTier.Ssd, "h", 0x1F90, 1 << 20, 4096, Secret, standby: false, nodeId: 0x80000001, share: 0x00000000FFFFFFFF));
        AssertBytes(fixedHex + "00" + "01000080" + "FFFFFFFF00000000", shared);
        Assert.True(RegisterNodeRequest.TryRead(shared, out var sharedRequest));
        Assert.Equal((false, 0x80000001u, 0x00000000FFFFFFFFUL), (sharedRequest.Standby, sharedRequest.NodeId, sharedRequest.Share));
        Assert.Equal((0u, RegisterNodeRequest.WholeNode), (liveRequest.NodeId, liveRequest.Share));
        AssertRefusesDamage(shared, b => RegisterNodeRequest.TryRead(b, out _), accepted: [live.Length, live.Length + 1]);

        var reply = new byte[RegisterNodeReply.Size];
        RegisterNodeReply.Write(reply, 9);
        AssertBytes("09000000", reply);
        Assert.True(RegisterNodeReply.TryRead(reply, out var nodeId));
        Assert.Equal(9u, nodeId);
        AssertRefusesDamage(reply, b => RegisterNodeReply.TryRead(b, out _));
    }

    [Fact]
    public void Heartbeat()
    {
        var heartbeat = new HeartbeatRequest(9, 0.5, 1.5, 2, 3);
        var bytes = Encode(b => HeartbeatRequest.Write(b, heartbeat));
        AssertBytes("09000000" + "000000000000E03F" + "000000000000F83F" + "0000000000000040" + "0300000000000000", bytes);
        Assert.True(HeartbeatRequest.TryRead(bytes, out var read));
        Assert.Equal(heartbeat, read);
        AssertRefusesDamage(bytes, b => HeartbeatRequest.TryRead(b, out _));
    }

    [Fact]
    public void HeartbeatReplyCarriesUsedAndWantedBytes()
    {
        var reply = new byte[HeartbeatReply.Size];
        HeartbeatReply.Write(reply, new HeartbeatReply(3 << 20, 5));
        AssertBytes("0000300000000000" + "0500000000000000", reply);
        Assert.True(HeartbeatReply.TryRead(reply, out var read));
        Assert.Equal(new HeartbeatReply(3 << 20, 5), read);
        Assert.True(HeartbeatReply.TryRead([], out var empty));
        Assert.Equal(default, empty);
        Assert.False(HeartbeatReply.TryRead(reply.AsSpan(0, 9), out _));
        Assert.False(HeartbeatReply.TryRead([.. reply, 0], out _));
        HeartbeatReply.Write(reply, new HeartbeatReply(-1, 0));
        Assert.False(HeartbeatReply.TryRead(reply, out _));
    }

    [Fact]
    public void ListNodes()
    {
        var node = new NodeRecord(1, NodeTier.Dram, NodeState.Live, "h", 0x1F90, 1 << 20, 4096, 0.5, 1.5, 2, 7);
        var bytes = Encode(b => ListNodesReply.Write(b, [node]));

        // count u32 | id u32, tier u8, state u8, host, port u16, capacity i64, used i64, cpu f64, rx f64, tx f64 | moved i64 per node.
        const string entry = "01000000" + "01" + "01" + "0100" + "68" + "901F" + "0000100000000000" + "0010000000000000"
            + "000000000000E03F" + "000000000000F83F" + "0000000000000040";
        AssertBytes("01000000" + entry + "0700000000000000", bytes);
        Assert.True(ListNodesReply.TryRead(bytes, out var nodes));
        Assert.Equal(new[] { node }, nodes);

        // An older server sends no moved bytes; then they read as 0.
        Assert.True(ListNodesReply.TryRead(bytes.AsSpan(0, bytes.Length - 8), out var old));
        Assert.Equal(new[] { node with { MovedBytes = 0 } }, old);
        // Sections after the moved bytes are skipped (a newer server), and a cut inside them drops them.
        AssertRefusesDamage(bytes, b => ListNodesReply.TryRead(b, out _), trailingAllowed: true, accepted: [.. Enumerable.Range(bytes.Length - 8, 8)]);

        Assert.False(ListNodesReply.TryRead(Convert.FromHexString("FFFFFFFF" + entry), out _));
    }

    [Fact]
    public void RegisterJob()
    {
        var bytes = Encode(b => RegisterJobRequest.Write(b, new RegisterJobRequest("j", KnownToken, NodeTier.Hdd)));
        AssertBytes("0100" + "6A" + "0102030405060708090A0B0C0D0E0F10" + "03", bytes);
        Assert.True(RegisterJobRequest.TryRead(bytes, out var request));
        Assert.Equal(new RegisterJobRequest("j", KnownToken, NodeTier.Hdd), request);

        // Older clients stop after the name, or after the token.
        Assert.True(RegisterJobRequest.TryRead(bytes.AsSpan(0, 3), out var nameOnly));
        Assert.Equal(new RegisterJobRequest("j", JobToken.None, NodeTier.Dram), nameOnly);
        Assert.True(RegisterJobRequest.TryRead(bytes.AsSpan(0, 3 + JobToken.Size), out var withToken));
        Assert.Equal(new RegisterJobRequest("j", KnownToken, NodeTier.Dram), withToken);
        Assert.False(RegisterJobRequest.TryRead(bytes.AsSpan(0, 2), out _));

        // No weights, no weight map on the wire: the older form byte for byte.
        Assert.Equal(bytes, Encode(b => RegisterJobRequest.Write(b, new RegisterJobRequest("j", KnownToken, NodeTier.Hdd) { Weights = new Dictionary<uint, double>() })));

        var reply = Encode(b => RegisterJobReply.Write(b, new RegisterJobReply("j-1", KnownToken)));
        AssertBytes("0300" + "6A2D31" + "0102030405060708090A0B0C0D0E0F10", reply);
        Assert.True(RegisterJobReply.TryRead(reply, out var registered));
        Assert.Equal(new RegisterJobReply("j-1", KnownToken), registered);
        AssertRefusesDamage(reply, b => RegisterJobReply.TryRead(b, out _));
    }

    [Fact]
    public void RegisterJobWithWeights()
    {
        var weighted = new RegisterJobRequest("j", KnownToken, NodeTier.Ssd) { Weights = new Dictionary<uint, double> { [2] = 0.5 } };
        var bytes = Encode(b => RegisterJobRequest.Write(b, weighted));
        AssertBytes("0100" + "6A" + "0102030405060708090A0B0C0D0E0F10" + "02" + "01000000" + "02000000" + "000000000000E03F", bytes);
        Assert.True(RegisterJobRequest.TryRead(bytes, out var request));
        Assert.Equal(("j", KnownToken, NodeTier.Ssd), (request.Name, request.Token, request.Tier));
        Assert.Equal(new Dictionary<uint, double> { [2] = 0.5 }, request.Weights);

        // The weights end the body: stopping before them is the older form; a cut inside the map is not accepted.
        // (A name and one byte reads as a name and a tier without a token, as it always has.)
        var tierEnd = 3 + JobToken.Size + 1;
        Assert.True(RegisterJobRequest.TryRead(bytes.AsSpan(0, tierEnd), out var unweighted));
        Assert.Null(unweighted.Weights);
        AssertRefusesDamage(bytes, b => RegisterJobRequest.TryRead(b, out _), accepted: [3, 4, 3 + JobToken.Size, tierEnd]);
        Assert.False(RegisterJobRequest.TryRead([.. bytes, 0], out _));
    }

    [Fact]
    public void RegisterJobWithQuota()
    {
        // A quota follows the weights, which are then written even when empty (count 0).
        var limited = new RegisterJobRequest("j", KnownToken, NodeTier.Dram) { Quota = new JobQuota(1 << 20, 1000, 4096) };
        var bytes = Encode(b => RegisterJobRequest.Write(b, limited));
        var tierEnd = 3 + JobToken.Size + 1;
        AssertBytes("0100" + "6A" + "0102030405060708090A0B0C0D0E0F10" + "01" + "00000000"
            + "0000100000000000" + "E803000000000000" + "0010000000000000", bytes);
        Assert.True(RegisterJobRequest.TryRead(bytes, out var request));
        Assert.Equal(new JobQuota(1 << 20, 1000, 4096), request.Quota);
        Assert.Empty(request.Weights!);

        // With weights: the map, then the quota.
        var both = limited with { Weights = new Dictionary<uint, double> { [2] = 0.5 } };
        var withWeights = Encode(b => RegisterJobRequest.Write(b, both));
        AssertBytes("0100" + "6A" + "0102030405060708090A0B0C0D0E0F10" + "01" + "01000000" + "02000000" + "000000000000E03F"
            + "0000100000000000" + "E803000000000000" + "0010000000000000", withWeights);
        Assert.True(RegisterJobRequest.TryRead(withWeights, out var weighted));
        Assert.Equal((new JobQuota(1 << 20, 1000, 4096), 0.5), (weighted.Quota, weighted.Weights![2]));

        // The older forms read as before, without a quota; a body cut inside the quota is refused.
        Assert.True(RegisterJobRequest.TryRead(bytes.AsSpan(0, tierEnd + 4), out var weightsOnly));
        Assert.Null(weightsOnly.Quota);
        Assert.True(RegisterJobRequest.TryRead(bytes.AsSpan(0, tierEnd), out var oldest));
        Assert.Equal((null, null), (oldest.Weights, oldest.Quota));
        AssertRefusesDamage(bytes, b => RegisterJobRequest.TryRead(b, out _), accepted: [3, 4, 3 + JobToken.Size, tierEnd, tierEnd + 4]);
        Assert.False(RegisterJobRequest.TryRead([.. bytes, 0], out _));
    }

    [Fact]
    public void DeregisterJob()
    {
        var bytes = Encode(b => DeregisterJobRequest.Write(b, "j-1"));
        AssertBytes("0300" + "6A2D31", bytes);
        Assert.True(DeregisterJobRequest.TryRead(bytes, out var id));
        Assert.Equal("j-1", id);
        AssertRefusesDamage(bytes, b => DeregisterJobRequest.TryRead(b, out _));

        var reply = Encode(b => DeregisterJobReply.Write(b, new DeregisterJobReply(2, 300)));
        AssertBytes("0200000000000000" + "2C01000000000000", reply);
        Assert.True(DeregisterJobReply.TryRead(reply, out var freed));
        Assert.Equal(new DeregisterJobReply(2, 300), freed);
        AssertRefusesDamage(reply, b => DeregisterJobReply.TryRead(b, out _));
    }

    [Fact]
    public void SetWeights()
    {
        var bytes = Encode(b => SetWeightsRequest.Write(b, "j-1", new Dictionary<uint, double> { [2] = 0.5 }, NodeTier.Ssd));
        AssertBytes("0300" + "6A2D31" + "01000000" + "02000000" + "000000000000E03F" + "02", bytes);
        Assert.True(SetWeightsRequest.TryRead(bytes, out var request));
        Assert.Equal("j-1", request!.JobId);
        Assert.Equal(0.5, request.Weights[2]);
        Assert.Equal(NodeTier.Ssd, request.Tier);

        // The tier is optional (older controllers stop before it); a cut inside a pair is not.
        Assert.True(SetWeightsRequest.TryRead(bytes.AsSpan(0, bytes.Length - 1), out var noTier));
        Assert.Null(noTier!.Tier);
        AssertRefusesDamage(bytes, b => SetWeightsRequest.TryRead(b, out _), accepted: [bytes.Length - 1]);
        Assert.Equal(3u, SetWeightsRequest.FirstInvalidWeight(new Dictionary<uint, double> { [2] = 1, [3] = double.NaN }));
        Assert.Null(SetWeightsRequest.FirstInvalidWeight(new Dictionary<uint, double> { [2] = 0 }));
    }

    [Fact]
    public void DrainAndActivateNode()
    {
        var drain = Encode(b => DrainNodeRequest.Write(b, 9));
        AssertBytes("09000000", drain);
        Assert.True(DrainNodeRequest.TryRead(drain, out var drained));
        Assert.Equal(9u, drained);
        AssertRefusesDamage(drain, b => DrainNodeRequest.TryRead(b, out _));

        var activate = Encode(b => ActivateNodeRequest.Write(b, 9));
        AssertBytes("09000000", activate);
        Assert.True(ActivateNodeRequest.TryRead(activate, out var activated));
        Assert.Equal(9u, activated);
        AssertRefusesDamage(activate, b => ActivateNodeRequest.TryRead(b, out _));
    }

    [Fact]
    public void ServerLoadReplyCarriesCountersSinceStart()
    {
        var reply = Encode(b => ServerLoadReply.Write(b, new ServerLoad(1.5, 2.0, 7, 2) { HeldObjects = 3, HeldInlineBytes = 300 }));
        AssertBytes("000000000000F83F" + "0000000000000040" + "0700000000000000" + "0200" + "0300000000000000" + "2C01000000000000", reply);
        Assert.Equal(ServerLoadReply.Size, reply.Length);
        Assert.True(ServerLoadReply.TryRead(reply, out var load));
        Assert.Equal(new ServerLoad(1.5, 2.0, 7, 2) { HeldObjects = 3, HeldInlineBytes = 300 }, load);
        AssertRefusesDamage(reply, b => ServerLoadReply.TryRead(b, out _));

        // Nonsense counters are refused, not turned into a negative or infinite rate.
        Assert.False(ServerLoadReply.TryRead(Encode(b => ServerLoadReply.Write(b, new ServerLoad(-1, 2, 7, 2))), out _));
        Assert.False(ServerLoadReply.TryRead(Encode(b => ServerLoadReply.Write(b, new ServerLoad(double.NaN, 2, 7, 2))), out _));
        Assert.False(ServerLoadReply.TryRead(Encode(b => ServerLoadReply.Write(b, new ServerLoad(1, 2, -7, 2))), out _));
        Assert.False(ServerLoadReply.TryRead(Encode(b => ServerLoadReply.Write(b, new ServerLoad(1, 2, 7, 2) { HeldObjects = -1 })), out _));
    }

    [Fact]
    public void RevokeExtentsRequestIsSignedWithTheNodesSecret()
    {
        Revocation[] entries = [new(RevocationKind.Seal, 7, 0x10000, 0x1234), new(RevocationKind.Forget, 8, 0x20000, 0x10000)];
        var bytes = Encode(b => RevokeExtentsRequest.Write(b, Secret, 3, entries));
        var signed = "03000000" + "02000000"
            + "01000000" + "07000000" + "0000010000000000" + "3412000000000000"
            + "02000000" + "08000000" + "0000020000000000" + "0000010000000000";
        var mac = Convert.ToHexString(System.Security.Cryptography.HMACSHA256.HashData(Secret, Convert.FromHexString(signed)))[..32];
        AssertBytes(signed + mac, bytes);
        Assert.Equal(Status.Ok, RevokeExtentsRequest.TryRead(bytes, Secret, out var node, out var read));
        Assert.Equal(3u, node);
        Assert.Equal(entries, read);

        // Another secret, any flipped bit, a cut or a longer body: nothing is returned.
        Assert.Equal(Status.Unauthorized, RevokeExtentsRequest.TryRead(bytes, new byte[32], out _, out read));
        Assert.Empty(read);
        for (var bit = 0; bit < bytes.Length * 8; bit++)
        {
            var flipped = bytes.ToArray();
            flipped[bit / 8] ^= (byte)(1 << (bit % 8));
            Assert.NotEqual(Status.Ok, RevokeExtentsRequest.TryRead(flipped, Secret, out _, out read));
            Assert.Empty(read);
        }

        AssertRefusesDamage(bytes, body => RevokeExtentsRequest.TryRead(body, Secret, out _, out _) == Status.Ok);
        Assert.Throws<ArgumentException>(() => RevokeExtentsRequest.Write(new BodyWriter(), Secret, 3, new Revocation[RevokeExtentsRequest.MaxEntries + 1]));
    }
}
