using System.Security.Cryptography;
using Microsoft.Extensions.Time.Testing;
using Pocket.Admin;
using Pocket.Embedded;
using Pocket.Protocol;
using Pocket.Storage;

namespace Pocket.Tests;

/// <summary>Memory and disk follow use: freed space goes back, a dram node keeps only a headroom ready.</summary>
public sealed class SpaceReclaimerTests : IDisposable
{
    private const int Block = 64 << 10;
    private const long MiB = 1 << 20;
    private static readonly TimeSpan Timeout = TimeSpan.FromSeconds(60);
    private readonly string _directory = Directory.CreateTempSubdirectory("pocket-space-").FullName;

    private static SpaceReclaimerOptions Dram(long headroom) => new() { Headroom = headroom, ReleaseDelay = TimeSpan.FromSeconds(30), Granularity = NativeMemoryDevice.HugePageSize };

    private static void Put(BlockStore store, long offset, byte[] data, uint generation)
    {
        Assert.Equal(BlockResult.Ok, store.BeginWrite(offset, data.Length, generation));
        store.Device.Write(offset, data);
        store.EndWrite(offset, data.Length, generation);
    }

    [Fact]
    public async Task AnEmptyDramNodeHoldsItsHeadroomAndNoMore()
    {
        var device = new NativeMemoryDevice(64 * MiB);
        using var store = new BlockStore(device, Block);
        using var reclaimer = new SpaceReclaimer(store, Dram(4 * MiB), new FakeTimeProvider());
        await reclaimer.RunPassAsync().WaitAsync(Timeout);

        Assert.True(reclaimer.HeadroomReady);
        Assert.Equal(4 * MiB, device.ResidentBytes);
        Assert.Equal(4 * MiB, reclaimer.HeadroomReadyBytes);

        // Writes use the headroom up; the next pass faults in the next free space above them.
        Put(store, 0, RandomNumberGenerator.GetBytes((int)(6 * MiB)), 1);
        await reclaimer.RunPassAsync().WaitAsync(Timeout);
        Assert.Equal(10 * MiB, device.ResidentBytes);
    }

    [Fact]
    public async Task WritesWakeTheReclaimerOnlyOnceTheyUsedAnEighthOfTheHeadroom()
    {
        var device = new NativeMemoryDevice(64 * MiB);
        using var store = new BlockStore(device, Block);
        using var reclaimer = new SpaceReclaimer(store, Dram(16 * MiB), new FakeTimeProvider());
        await reclaimer.RunPassAsync().WaitAsync(Timeout);

        // A function's 64 KiB puts: no wake-up of the worker each (its wake-up came before the write's reply).
        var block = RandomNumberGenerator.GetBytes(Block);
        for (var i = 0; i < 16; i++)
        {
            Put(store, i * (long)Block, block, 1);
        }

        Assert.Equal(0, reclaimer.WriteWakes);

        // An eighth of the headroom (2 MiB) written since the last pass: one wake-up, and the pass refills the headroom.
        Put(store, 16 * (long)Block, RandomNumberGenerator.GetBytes((int)MiB), 1);
        Assert.Equal(1, reclaimer.WriteWakes);
        await reclaimer.RunPassAsync().WaitAsync(Timeout);
        Assert.Equal(16 * MiB, reclaimer.HeadroomReadyBytes);
    }

    [Fact]
    public async Task FreedMemoryGoesBackAfterTheDelayExceptTheHeadroomAndLiveDataStaysIntact()
    {
        var time = new FakeTimeProvider();
        var device = new NativeMemoryDevice(64 * MiB);
        using var store = new BlockStore(device, Block);
        using var reclaimer = new SpaceReclaimer(store, Dram(4 * MiB), time);
        Put(store, 0, RandomNumberGenerator.GetBytes((int)(32 * MiB)), 1);
        var live = RandomNumberGenerator.GetBytes((int)MiB);
        Put(store, 40 * MiB, live, 2);
        await reclaimer.RunPassAsync().WaitAsync(Timeout);
        var full = device.ResidentBytes;
        Assert.True(full >= 37 * MiB, $"{full} bytes resident after writing 33 MiB with a 4 MiB headroom");

        store.Forget(0, 32 * MiB, 1);
        await reclaimer.RunPassAsync().WaitAsync(Timeout);
        time.Advance(TimeSpan.FromSeconds(29));
        await reclaimer.RunPassAsync().WaitAsync(Timeout);
        Assert.Equal(full, device.ResidentBytes);
        Assert.Equal(0, reclaimer.DiscardedBytes);

        time.Advance(TimeSpan.FromSeconds(1));
        await reclaimer.RunPassAsync().WaitAsync(Timeout);

        // The lowest 4 MiB of free memory stay (the next allocations land there); the live object's huge page stays.
        Assert.Equal(4 * MiB, reclaimer.HeadroomReadyBytes);
        Assert.Equal(full - (32 * MiB), device.ResidentBytes);
        Assert.True(device.ResidentBytes <= 8 * MiB, $"{device.ResidentBytes} bytes resident with 1 MiB live and a 4 MiB headroom");
        var back = new byte[live.Length];
        Assert.Equal(BlockResult.Ok, store.Read(40 * MiB, back, 2));
        Assert.Equal(live, back);

        // The space given back takes new writes of a newer allocation.
        var again = RandomNumberGenerator.GetBytes((int)(8 * MiB));
        Put(store, 16 * MiB, again, 3);
        back = new byte[again.Length];
        Assert.Equal(BlockResult.Ok, store.Read(16 * MiB, back, 3));
        Assert.Equal(again, back);
    }

    [Fact]
    public async Task AWriteThatMeetsADiscardWaitsForItAndKeepsItsData()
    {
        using var gate = new DiscardGate(new NativeMemoryDevice(8 * MiB));
        using var store = new BlockStore(gate, Block);
        Put(store, 0, RandomNumberGenerator.GetBytes((int)MiB), 1);
        store.Forget(0, MiB, 1);

        var discard = Task.Run(() => store.DiscardFree(0, MiB / Block, 1024));
        await gate.Entered.WaitAsync(Timeout);

        // A newer allocation's write of the same space, while the device is still giving it back.
        var data = RandomNumberGenerator.GetBytes(100_000);
        var write = Task.Run(() =>
        {
            var status = store.BeginWrite(Block, data.Length, 2);
            gate.Log.Enqueue("write");
            if (status == BlockResult.Ok)
            {
                store.Device.Write(Block, data);
                store.EndWrite(Block, data.Length, 2);
            }

            return status;
        });
        gate.Release.Set();
        Assert.Equal(MiB, await discard.WaitAsync(Timeout));
        Assert.Equal(BlockResult.Ok, await write.WaitAsync(Timeout));

        Assert.Equal(new[] { "discarded", "write" }, gate.Log.ToArray());
        var back = new byte[data.Length];
        Assert.Equal(BlockResult.Ok, store.Read(Block, back, 2));
        Assert.Equal(data, back);

        // The old allocation stays forgotten, and a discard never touches live blocks.
        Assert.Equal(BlockResult.Stale, store.BeginWrite(0, 10, 1));
        Assert.Equal(0, store.DiscardFree(1, 2, 1024));
        Assert.Equal(BlockResult.Ok, store.Read(Block, back, 2));
        Assert.Equal(data, back);
    }

    [Theory]
    [InlineData(NodeTier.Ssd)]
    [InlineData(NodeTier.Hdd)]
    public async Task DeletingFromADiskNodePunchesHolesSoItsFileGivesTheSpaceBack(NodeTier tier)
    {
        await using var cluster = await PocketCluster.StartAsync(new PocketClusterOptions { StorageNodes = 0, PreTouchMemory = false, DataDirectory = _directory });
        var index = await cluster.AddNodeAsync(64 * MiB, tier: tier);
        var node = cluster.Nodes[index]!;
        var file = (FileDevice)((QueuedDevice)node.Store.Device).Inner;
        await using var client = await cluster.ConnectAsync();
        var job = await cluster.Admin(client).RegisterJobAsync("punch", tier);

        var empty = file.AllocatedBytes;
        var data = RandomNumberGenerator.GetBytes((int)(24 * MiB));
        await job.PutAsync("a", data);
        await job.PutAsync("b", data.AsMemory(0, (int)(8 * MiB)));
        // Counted whole: the device's O_DIRECT probe writes the file's first block at start (counted in `empty` in one run
        // out of many, as the file system reported it), and the data's blocks include that one.
        var full = file.AllocatedBytes;
        Assert.True(full >= 32 * MiB, $"file took {empty} -> {full} bytes for 32 MiB");

        // The node punches the blocks once the metadata server's forget reaches it (Delete may reply first when the
        // node is slow to confirm: the forget is then retried in the background).
        var discarded = node.Reclaimer.DiscardedBytes;
        await job.DeleteAsync("a");
        await node.Reclaimer.WaitForDiscardedAsync(discarded + (24 * MiB)).WaitAsync(Timeout);
        var after = file.AllocatedBytes;

        // Allowed bytes for the file system's own: a file's allocated size counts its extent tree's blocks too, and
        // punching holes splits extents (one run missed 24 MiB by exactly one 4 KiB block).
        const long Bookkeeping = 64 * 1024;
        Assert.True(full - after >= (24 * MiB) - Bookkeeping, $"file took {full} -> {after} bytes after deleting 24 MiB");
        Assert.True(after >= 8 * MiB, $"the live 8 MiB object must keep its blocks ({empty} -> {after})");
        Assert.Equal(data.AsMemory(0, (int)(8 * MiB)).ToArray(), await job.GetAsync("b"));

        // The space is reused, and what is written there reads back.
        var next = RandomNumberGenerator.GetBytes((int)(24 * MiB));
        await job.PutAsync("c", next);
        Assert.Equal(next, await job.GetAsync("c"));
    }

    public void Dispose()
    {
        try
        {
            Directory.Delete(_directory, recursive: true);
        }
        catch (IOException)
        {
        }
    }

    /// <summary>Holds each discard until released, and logs when it is done.</summary>
    private sealed class DiscardGate(IBlockDevice inner) : IBlockDevice
    {
        public SemaphoreSlim Entered { get; } = new(0);

        public ManualResetEventSlim Release { get; } = new();

        public System.Collections.Concurrent.ConcurrentQueue<string> Log { get; } = new();

        public string Kind => inner.Kind;

        public long Capacity => inner.Capacity;

        public bool IsDirect => false;

        public Span<byte> GetSpan(long offset, int length) => throw new NotSupportedException();

        public void Write(long offset, ReadOnlySpan<byte> data) => inner.Write(offset, data);

        public void Read(long offset, Span<byte> destination) => inner.Read(offset, destination);

        public bool Discard(long offset, long length)
        {
            Entered.Release();
            Release.Wait();
            var done = inner.Discard(offset, length);
            Log.Enqueue("discarded");
            return done;
        }

        public void Dispose()
        {
            inner.Dispose();
            Entered.Dispose();
            Release.Dispose();
        }
    }
}
