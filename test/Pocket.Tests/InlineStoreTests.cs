using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.Extensions.Time.Testing;
using Pocket.Metadata;
using Pocket.Protocol;
using static Pocket.Tests.TestSupport;

namespace Pocket.Tests;

/// <summary>
/// The inline store on its own and under the metadata state: slots are reused while faulted in, never under a reader,
/// given back to the system by trims (counted by the store), and the inline bound holds as before.
/// </summary>
public sealed class InlineStoreTests : IDisposable
{
    private const int Object = 64 << 10;
    private readonly FakeTimeProvider _time = new();
    private readonly List<IDisposable> _owned = [];

    public void Dispose()
    {
        foreach (var owned in _owned)
        {
            owned.Dispose();
        }
    }

    private InlineStore NewStore(long capacity = 64L << 20)
    {
        var store = new InlineStore(capacity, _time);
        _owned.Add(store);
        return store;
    }

    private MetadataState NewState(long inlineCapacity)
    {
        var state = new MetadataState(new MetadataServerOptions { TimeProvider = _time, InlineCapacity = inlineCapacity }, NullLogger.Instance, new Random(5));
        _owned.Add(state.Inline);
        return state;
    }

    private static unsafe nint Address(InlineBlock block) => (nint)block.Pointer;

    [Fact]
    public void ATimedTrimWithNothingToGiveBackAllocatesNothing()
    {
        // Slabs in use with a free slot faulted in, within the warm headroom: idle or not, nothing goes back.
        var store = NewStore();
        var blocks = Enumerable.Range(0, 3).Select(i => store.Store(RandomBytes(Object, i))!).ToList();
        blocks[0].Release();
        Assert.Equal(0, store.Trim(idleOnly: true));

        // The timer's ticks, every second on every metadata server: an idle one should cost nothing.
        var before = GC.GetAllocatedBytesForCurrentThread();
        for (var tick = 0; tick < 100; tick++)
        {
            _time.Advance(TimeSpan.FromSeconds(1));
            store.Trim(idleOnly: true);
        }

        Assert.Equal(0, GC.GetAllocatedBytesForCurrentThread() - before);
        Assert.Equal((long)Object, store.FreeResidentBytes);
    }

    [Fact]
    public void AFreedSlotIsTheNextPutsOfItsSize()
    {
        var store = NewStore();
        var first = store.Store(RandomBytes(Object, 1))!;
        var address = Address(first);
        Assert.NotEqual(0, address);
        Assert.Equal(Object, store.SlotBytesInUse);

        first.Release();
        Assert.Equal((0L, (long)Object), (store.SlotBytesInUse, store.FreeResidentBytes));

        var data = RandomBytes(Object - 100, 2);
        var second = store.Store(data)!;
        Assert.Equal(address, Address(second));
        Assert.Equal(Hash(data), Hash(second.Span));
        Assert.Equal(0, store.FreeResidentBytes);
    }

    [Fact]
    public void ObjectsOfHalfAPageOrLessKeepAnArrayEach()
    {
        var store = NewStore();
        var small = store.Store(RandomBytes(Environment.SystemPageSize / 2, 3))!;
        Assert.Equal(0, Address(small));
        Assert.Equal((0L, 0L), (store.SlotBytesInUse, store.MappedBytes));
        small.Release();
    }

    [Fact]
    public void ASlotBeingReadIsNotReusedUntilItsReaderIsDone()
    {
        var store = NewStore();
        var data = RandomBytes(Object, 4);
        var read = store.Store(data)!;
        read.BeginRead();
        read.Release();

        // Deleted while a reply still sends it: the next put gets another slot, and the bytes stay the object's.
        var other = store.Store(RandomBytes(Object, 5))!;
        Assert.NotEqual(Address(read), Address(other));
        Assert.Equal(Hash(data), Hash(read.Span));
        Assert.Equal(2L * Object, store.SlotBytesInUse);

        read.EndRead();
        Assert.Equal(Object, store.SlotBytesInUse);
        Assert.Equal(Address(read), Address(store.Store(RandomBytes(Object, 6))!));
    }

    [Fact]
    public void AGetsBytesSurviveADeleteAndAPutBeforeItsReplyIsDone()
    {
        var state = NewState(1L << 20);
        var job = state.RegisterJob("job", JobToken.None, NodeTier.Dram).Value;
        var data = RandomBytes(Object, 7);
        Assert.True(state.PutInline(job, "a", data, FrameFlags.None).IsOk);

        // As the get handler: the state hands out the bytes, the lock is released, and before the reply copies them
        // another loop deletes the object and puts a new one of the same size.
        var read = state.Get(job, "a", 0, -1, deleteAfterRead: false, connectionId: 1).Value;
        Assert.Equal(1L, state.Delete(job, "a", recursive: false).Value);
        Assert.True(state.PutInline(job, "b", RandomBytes(Object, 8), FrameFlags.None).IsOk);
        Assert.Equal(Hash(data), Hash(read.Inline));
        read.Block!.EndRead();

        // Delete-after-read: the object leaves the namespace at once, its bytes stay the reader's until it is done.
        var taken = state.Get(job, "b", 0, -1, deleteAfterRead: true, connectionId: 1).Value;
        var expected = Hash(taken.Inline);
        Assert.True(state.PutInline(job, "c", RandomBytes(Object, 9), FrameFlags.None).IsOk);
        Assert.Equal(expected, Hash(taken.Inline));
        Assert.Equal(Status.NotFound, state.Get(job, "b", 0, -1, deleteAfterRead: false, connectionId: 1).Status);
        taken.Block!.EndRead();
        Assert.Equal(Object, state.Inline.FreeResidentBytes);
    }

    [Fact]
    public void TheInlineBoundHoldsForSlotsAndAFreedSlotTakesTheNextPut()
    {
        var state = NewState(16 * Object);
        var job = state.RegisterJob("job", JobToken.None, NodeTier.Dram).Value;
        for (var i = 0; i < 16; i++)
        {
            Assert.True(state.PutInline(job, $"k{i}", RandomBytes(Object, i), FrameFlags.None).IsOk);
        }

        Assert.Equal(Status.CapacityExceeded, state.PutInline(job, "over", RandomBytes(Object, 99), FrameFlags.None).Status);
        Assert.Equal((16L * Object, 16L * Object), (state.Snapshot(0).InlineBytes, state.Inline.SlotBytesInUse));

        Assert.Equal(1L, state.Delete(job, "k3", recursive: false).Value);
        var mapped = state.Inline.MappedBytes;
        Assert.True(state.PutInline(job, "again", RandomBytes(Object, 100), FrameFlags.None).IsOk);
        Assert.Equal(mapped, state.Inline.MappedBytes);
        Assert.Equal(Hash(RandomBytes(Object, 100)), Hash(state.Get(job, "again", 0, -1, false, 1).Value.Inline));
    }

    [Fact]
    public void FreeSlotsGoBackWhenIdleOrAtOnceWhenAskedKeepingTheHeadroom()
    {
        var store = NewStore();
        var count = (int)(InlineStore.WarmHeadroom / Object) * 4;
        var blocks = Enumerable.Range(0, count).Select(i => store.Store(RandomBytes(Object, i))!).ToList();
        var kept = blocks[0];
        foreach (var block in blocks.Skip(1))
        {
            block.Release();
        }

        var free = (long)(count - 1) * Object;
        Assert.Equal(free, store.FreeResidentBytes);

        // Freed just now: the timer's trim leaves them for the next puts.
        Assert.Equal(0, store.Trim(idleOnly: true));
        Assert.Equal(free, store.FreeResidentBytes);

        _time.Advance(InlineStore.IdleRelease);
        var released = store.Trim(idleOnly: true);
        Assert.True(store.FreeResidentBytes <= InlineStore.WarmHeadroom, $"{store.FreeResidentBytes} bytes still free and resident");
        Assert.True(released >= free - InlineStore.WarmHeadroom, $"{released} bytes released of {free}");
        Assert.Equal(released, store.ReleasedBytes);

        // The object still stored is untouched, and released slots are reused (zeroed by the system, then written).
        Assert.Equal(Hash(RandomBytes(Object, 0)), Hash(kept.Span));
        var refill = Enumerable.Range(0, count - 1).Select(i => store.Store(RandomBytes(Object, 1000 + i))!).ToList();
        Assert.Equal(Hash(RandomBytes(Object, 1000 + count - 2)), Hash(refill[^1].Span));

        // A job's end: everything free beyond the headroom goes at once, idle or not.
        foreach (var block in refill)
        {
            block.Release();
        }

        Assert.True(store.Trim(idleOnly: false) > 0);
        Assert.True(store.FreeResidentBytes <= InlineStore.WarmHeadroom);
    }

    [Fact]
    public void PastItsAddressBudgetTheStoreGivesNoSlotAndEmptySlabsOfOtherSizesMakeRoom()
    {
        // A tiny bound: twice it plus one slab of every size. Filling one size leaves no room for a slab of another.
        var store = NewStore(capacity: 1);
        var held = new List<InlineBlock>();
        while (store.Store(RandomBytes(Object, held.Count)) is { } block)
        {
            held.Add(block);
        }

        Assert.True(held.Count >= InlineStore.SlotsPerSlab);
        const int OtherSize = 48 << 10;
        Assert.Null(store.Store(RandomBytes(OtherSize, 1)));

        // Once a whole slab is free, a put of another size unmaps it for a slab of its own.
        foreach (var block in held)
        {
            block.Release();
        }

        Assert.NotNull(store.Store(RandomBytes(OtherSize, 1)));
        Assert.True(store.ReleasedBytes > 0);
    }
}
