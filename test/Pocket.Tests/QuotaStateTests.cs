using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.Extensions.Time.Testing;
using Pocket.Metadata;
using Pocket.Protocol;
using Pocket.Protocol.Messages;

namespace Pocket.Tests;

/// <summary>
/// Job quotas and the metadata server's object-memory bound, on the metadata state alone (no socket): what is counted,
/// what is refused, and that every count returns to zero. QuotaTests covers the same over real sockets.
/// </summary>
public sealed class QuotaStateTests
{
    private const int Block = 4096;

    private readonly FakeTimeProvider _time = new();

    private static MetadataState NewState(long? maxObjectMemory = null, long? inlineCapacity = 1 << 20, JobQuota defaultQuota = default, FakeTimeProvider? time = null)
    {
        var options = new MetadataServerOptions
        {
            TimeProvider = time ?? new FakeTimeProvider(),
            StripeUnit = 4 * Block,
            HddExtent = 4 * Block,
            InlineCapacity = inlineCapacity,
            MaxObjectMemory = maxObjectMemory,
            DefaultJobQuota = defaultQuota,
        };
        var state = new MetadataState(options, NullLogger.Instance, new Random(5));
        var body = new BodyWriter();
        RegisterNodeRequest.Write(body, NodeTier.Dram, "127.0.0.1", 7000, 1000L * Block, Block, new byte[RegisterNodeRequest.SecretSize], false);
        Assert.True(RegisterNodeRequest.TryRead(body.WrittenSpan, out var request));
        state.RegisterNode(request, connectionId: 1);
        return state;
    }

    private static JobEntry Job(MetadataState state, JobQuota? quota, string name = "job")
    {
        var result = state.RegisterJob(name, JobToken.None, NodeTier.Dram, null, quota);
        Assert.True(result.IsOk, result.Message);
        return result.Value;
    }

    private static void Write(MetadataState state, JobEntry job, string key, long size)
    {
        var open = state.Create(job, key, size, FrameFlags.None, connectionId: 10);
        Assert.True(open.IsOk, open.Message);
        Assert.True(state.Commit(job, open.Value.Handle, size).IsOk);
    }

    private static void AssertExceeded(Outcome outcome, params string[] words)
    {
        Assert.Equal(Status.QuotaExceeded, outcome.Status);
        foreach (var word in words)
        {
            Assert.Contains(word, outcome.Message, StringComparison.Ordinal);
        }
    }

    private static void AssertEmpty(JobEntry job)
    {
        Assert.Equal((0L, 0L, 0L, 0L, 0L, 0L), (job.ObjectCount, job.StoredBytes, job.InlineBytes, job.PendingBytes, job.KeyBytes, job.MemoryBytes));
    }

    [Fact]
    public void TheByteQuotaCountsBlocksInlineBytesAndOpenWrites()
    {
        var state = NewState();
        var job = Job(state, new JobQuota(MaxBytes: 10 * Block, 0, 0));
        Write(state, job, "blocks", 6 * Block);
        Assert.True(state.PutInline(job, "inline", new byte[1000], FrameFlags.None).IsOk);

        // 6 blocks + 1000 inline bytes held: 3 more blocks fit, 4 do not; the refused create reserves nothing.
        AssertExceeded(state.Create(job, "big", 4 * Block, FrameFlags.None, 10).Outcome, "job 'job-1'", "40960 bytes", $"holds {(6 * Block) + 1000}", $"needs {4 * Block}");
        Assert.Equal(2, job.ObjectCount);
        Assert.Equal(Status.NotFound, state.Lookup(job, "big").Status);

        var open = state.Create(job, "open", 2 * Block, FrameFlags.None, 10);
        Assert.True(open.IsOk);
        Assert.Equal(2 * Block, job.PendingBytes);

        // An open write's allocations count before it commits; a refused allocation leaves the write as it was.
        AssertExceeded(state.Allocate(job, open.Value.Handle, 2 * Block).Outcome, "bytes");
        Assert.True(state.Allocate(job, open.Value.Handle, Block).IsOk);
        AssertExceeded(state.PutInline(job, "small", new byte[Block - 999], FrameFlags.None), "bytes");
        Assert.True(state.PutInline(job, "small", new byte[Block - 1000], FrameFlags.None).IsOk);

        // Commit moves the open write's bytes to stored ones (what it did not use is given back).
        Assert.True(state.Commit(job, open.Value.Handle, Block).IsOk);
        Assert.Equal((0L, 7L * Block), (job.PendingBytes, job.StoredBytes));
        Assert.True(state.PutInline(job, "after-commit", new byte[1000], FrameFlags.None).IsOk);
    }

    [Fact]
    public void TheObjectQuotaCountsOpenWritesAndADeleteMakesRoom()
    {
        var state = NewState();
        var job = Job(state, new JobQuota(0, MaxObjects: 3, 0));
        Assert.True(state.PutInline(job, "a", [1], FrameFlags.None).IsOk);
        Write(state, job, "b", Block);
        var open = state.Create(job, "c", 0, FrameFlags.None, 10);
        Assert.True(open.IsOk);

        AssertExceeded(state.PutInline(job, "d", [1], FrameFlags.None), "may hold 3 objects and holds 3");
        AssertExceeded(state.Create(job, "d", Block, FrameFlags.None, 10).Outcome, "objects");

        // An aborted write and a deleted object each give their slot back.
        Assert.True(state.Abort(job, open.Value.Handle).IsOk);
        Assert.True(state.PutInline(job, "d", [1], FrameFlags.None).IsOk);
        Assert.True(state.Delete(job, "a", recursive: false).IsOk);
        Write(state, job, "e", Block);
        Assert.Equal(3, job.ObjectCount);
    }

    [Fact]
    public void TheKeyByteQuotaCountsUtf8Bytes()
    {
        var state = NewState();
        var job = Job(state, new JobQuota(0, 0, MaxKeyBytes: 10));
        Assert.True(state.PutInline(job, "ab", [], FrameFlags.None).IsOk);

        // "é" is two UTF-8 bytes: 2 + 4 * 2 = 10 fits, one more byte does not.
        Assert.True(state.PutInline(job, "éééé", [], FrameFlags.None).IsOk);
        Assert.Equal(10, job.KeyBytes);
        AssertExceeded(state.PutInline(job, "x", [], FrameFlags.None), "may hold 10 key bytes and holds 10; this request needs 1 more");
        AssertExceeded(state.Create(job, "x", 0, FrameFlags.None, 10).Outcome, "key bytes");
        Assert.True(state.Delete(job, "éééé", recursive: false).IsOk);
        Assert.Equal(2, job.KeyBytes);
    }

    [Fact]
    public void AJobRegisteredWithoutAQuotaGetsTheServersDefault()
    {
        var state = NewState(defaultQuota: new JobQuota(0, MaxObjects: 1, 0));
        var job = Job(state, quota: null);
        Assert.Equal(new JobQuota(0, 1, 0), job.Quota);
        Assert.True(state.PutInline(job, "a", [], FrameFlags.None).IsOk);
        AssertExceeded(state.PutInline(job, "b", [], FrameFlags.None), "objects");

        // An explicit unlimited quota is not the default.
        var free = Job(state, JobQuota.Unlimited, "free");
        for (var i = 0; i < 100; i++)
        {
            Assert.True(state.PutInline(free, $"k{i}", [], FrameFlags.None).IsOk);
        }
    }

    [Fact]
    public void AnotherJobIsUnaffectedByAJobAtItsQuota()
    {
        var state = NewState();
        var small = Job(state, new JobQuota(2 * Block, 2, 100), "small");
        var other = Job(state, new JobQuota(100 * Block, 100, 10_000), "other");
        Write(state, small, "x", 2 * Block);
        AssertExceeded(state.Create(small, "y", Block, FrameFlags.None, 10).Outcome, "job 'small-1'");
        Write(state, other, "x", 50 * Block);
        Assert.True(state.PutInline(other, "y", new byte[100], FrameFlags.None).IsOk);
        Assert.Equal((2L * Block, 1L), (small.StoredBytes, small.ObjectCount));
    }

    [Fact]
    public void AccountingReturnsToZeroAfterDeletesAndAfterDeregistration()
    {
        var state = NewState();
        var job = Job(state, new JobQuota(1000 * Block, 1000, 100_000));
        for (var i = 0; i < 20; i++)
        {
            Assert.True(state.PutInline(job, $"dir/inline-{i}", new byte[i * 10], FrameFlags.None).IsOk);
            Write(state, job, $"dir/block-{i}", (i + 1) * 100);
        }

        var open = state.Create(job, "open", 3 * Block, FrameFlags.None, 10);
        Assert.True(open.IsOk);
        Assert.True(state.Snapshot(0).ObjectMemory > 0);

        // A delete-after-read gives the object's counts back at once (its blocks follow when the reader is done).
        var read = state.Get(job, "dir/block-0", 0, -1, deleteAfterRead: true, connectionId: 10);
        Assert.True(read.IsOk);
        Assert.True(state.Abort(job, read.Value.Release).IsOk);

        Assert.Equal(39, state.Delete(job, "dir/", recursive: true).Value);
        Assert.True(state.Abort(job, open.Value.Handle).IsOk);
        AssertEmpty(job);
        Assert.Equal(0, state.Snapshot(0).ObjectMemory);

        // The same again, ended by deregistration with an open write still in flight.
        for (var i = 0; i < 20; i++)
        {
            Assert.True(state.PutInline(job, $"again-{i}", new byte[50], FrameFlags.None).IsOk);
            Write(state, job, $"block-{i}", Block);
        }

        Assert.True(state.Create(job, "in-flight", Block, FrameFlags.None, 10).IsOk);
        Assert.True(state.DeregisterJob(job.Id).IsOk);
        AssertEmpty(job);
        Assert.Equal((0L, 0L, 0), (state.Snapshot(0).ObjectMemory, state.Snapshot(0).InlineBytes, state.Snapshot(0).OpenHandles));
    }

    [Fact]
    public void KeepAfterJobObjectsStayCountedUntilTheyExpire()
    {
        var state = NewState(time: _time);
        var job = Job(state, JobQuota.Unlimited);
        Assert.True(state.PutInline(job, "kept", new byte[10], FrameFlags.KeepAfterJob).IsOk);
        Assert.True(state.PutInline(job, "gone", new byte[10], FrameFlags.None).IsOk);
        var removal = state.DeregisterJob(job.Id).Value;
        Assert.True(removal.Retired);
        Assert.Equal(MetadataState.ObjectMemoryOf("gone", 10), removal.Memory);
        Assert.Equal(MetadataState.ObjectMemoryOf("kept", 10), state.Snapshot(0).ObjectMemory);

        _time.Advance(TimeSpan.FromHours(2));
        Assert.Equal([(job.Id, 1L, MetadataState.ObjectMemoryOf("kept", 10))], state.ExpireRetiredJobs());
        AssertEmpty(job);
        Assert.Equal(0, state.Snapshot(0).ObjectMemory);
    }

    [Fact]
    public void TheServersObjectMemoryBoundRefusesEveryJobUntilOneFreesMemory()
    {
        // Room for exactly 10 objects with 1,000-character keys and no data (the reproduced fill, bounded).
        var key = new string('k', 995);
        var each = MetadataState.ObjectMemoryOf(key + "-0000", 0);
        var state = NewState(maxObjectMemory: 10 * each);
        var filler = Job(state, JobQuota.Unlimited, "filler");
        var stored = 0;
        while (state.PutInline(filler, $"{key}-{stored:D4}", [], FrameFlags.None) is { IsOk: true })
        {
            stored++;
        }

        Assert.Equal(10, stored);
        var refused = state.PutInline(filler, $"{key}-{stored:D4}", [], FrameFlags.None);
        AssertExceeded(refused, "the metadata server's object memory bound", $"({10 * each} bytes, {10 * each} in use");

        // Another job is refused the same way, by name of the server's bound; its quota is not the cause.
        var other = Job(state, new JobQuota(1 << 20, 1000, 1 << 20), "other");
        AssertExceeded(state.Create(other, "a", Block, FrameFlags.None, 10).Outcome, "object memory bound");
        Assert.Equal(0, other.ObjectCount);

        // Ending the filler gives all of its memory back, and the other job can write.
        Assert.True(state.DeregisterJob(filler.Id).IsOk);
        Assert.Equal(0, state.Snapshot(0).ObjectMemory);
        Write(state, other, "a", Block);
    }

    [Fact]
    public void InlineBytesPastTheObjectMemoryBoundAreSentToTheNodesWhileTheJobsQuotaStaysQuotaExceeded()
    {
        // Room for one more short key's records (210 bytes) but not with 1,000 inline bytes: the inline store is not full
        // (1 MiB), the server's bound is.
        var key = new string('k', 995);
        var each = MetadataState.ObjectMemoryOf(key + "-0000", 0);
        var state = NewState(maxObjectMemory: (9 * each) + 700);
        var job = Job(state, new JobQuota(MaxBytes: 20 * Block, 0, 0));
        for (var i = 0; i < 9; i++)
        {
            Assert.True(state.PutInline(job, $"{key}-{i:D4}", [], FrameFlags.None).IsOk);
        }

        var inline = state.PutInline(job, "small", new byte[1000], FrameFlags.None);
        Assert.Equal(Status.CapacityExceeded, inline.Status);
        Assert.Contains("object memory bound", inline.Message, StringComparison.Ordinal);
        Assert.Contains("write through storage nodes", inline.Message, StringComparison.Ordinal);
        Assert.Equal(Status.NotFound, state.Lookup(job, "small").Status);
        Assert.Equal(0, job.InlineBytes);

        // What the client then does: the same object through a node fits (its records only).
        Write(state, job, "small", 1000);
        Assert.Equal((1000L, false), (state.Lookup(job, "small").Value.Size, state.Lookup(job, "small").Value.IsInline));

        // The job's own quota refuses the same way on either path; so does the bound when even the records do not fit.
        AssertExceeded(state.PutInline(job, "over", new byte[20 * Block], FrameFlags.None), "job 'job-1'", "bytes");
        AssertExceeded(state.Create(job, "over", 20 * Block, FrameFlags.None, 10).Outcome, "job 'job-1'", "bytes");
        AssertExceeded(state.PutInline(job, $"{key}-last", new byte[10], FrameFlags.None), "object memory bound");
    }

    [Fact]
    public void TheDefaultInlineCapacityIsAQuarterOfTheObjectMemoryAtMost256MiB()
    {
        Assert.Equal(16L << 20, new MetadataServerOptions { MaxObjectMemory = 64L << 20 }.EffectiveInlineCapacity);
        Assert.Equal(256L << 20, new MetadataServerOptions { MaxObjectMemory = 8L << 30 }.EffectiveInlineCapacity);
        Assert.Equal(5, new MetadataServerOptions { MaxObjectMemory = 64L << 20, InlineCapacity = 5 }.EffectiveInlineCapacity);
        Assert.Throws<ArgumentException>(() => new MetadataServerOptions { InlineCapacity = -1 }.Validate());

        // The inline store of a small server fills at a quarter of its bound; the next small put goes to the nodes.
        var state = NewState(maxObjectMemory: 4000, inlineCapacity: null);
        Assert.Equal(1000, state.Snapshot(0).InlineCapacity);
        var job = Job(state, JobQuota.Unlimited);
        Assert.True(state.PutInline(job, "a", new byte[1000], FrameFlags.None).IsOk);
        var full = state.PutInline(job, "b", new byte[1], FrameFlags.None);
        Assert.Equal(Status.CapacityExceeded, full.Status);
        Assert.Contains("inline store is full (1000 bytes, 1000 in use)", full.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void ARegistrationWithANegativeLimitIsRefusedByTheOptions()
    {
        Assert.Throws<ArgumentException>(() => new MetadataServerOptions { DefaultJobQuota = new JobQuota(-1, 0, 0) }.Validate());
        Assert.Throws<ArgumentException>(() => new MetadataServerOptions { MaxObjectMemory = 0 }.Validate());
        Assert.True(new MetadataServerOptions().EffectiveMaxObjectMemory >= 64L << 20);
    }
}
