using System.Security.Cryptography;
using Pocket.Admin;
using Pocket.Client;
using Pocket.Embedded;
using Pocket.Protocol;
using Pocket.Storage;
using Pocket.StorageServer;

namespace Pocket.Tests;

/// <summary>One contract, run against every device.</summary>
public sealed class DeviceContractTests : IDisposable
{
    private readonly string _directory = Directory.CreateTempSubdirectory("pocket-device-").FullName;

    public static TheoryData<string> Devices => ["dram", "ssd", "hdd", "file-buffered", "file-unbuffered", "file-refused", "simulated", "faulty"];

    private IBlockDevice Make(string kind, long capacity) => kind switch
    {
        "dram" => BlockDevices.Create(NodeTier.Dram, capacity, Options),
        "ssd" => BlockDevices.Create(NodeTier.Ssd, capacity, Options),
        "hdd" => BlockDevices.Create(NodeTier.Hdd, capacity, Options),
        "file-buffered" => new FileDevice("ssd", _directory, capacity),
        "file-unbuffered" => new FileDevice(new FileDeviceOptions { Kind = "ssd", Directory = _directory, Capacity = capacity, Unbuffered = true, BounceBufferSize = 64 << 10 }),
        "file-refused" => new FileDevice(new FileDeviceOptions { Kind = "ssd", Directory = _directory, Capacity = capacity, Unbuffered = true, RefuseUnbuffered = true }),
        "simulated" => new SimulatedDevice(new NativeMemoryDevice(capacity, preTouch: false), "simulated", TimeSpan.Zero, 0),
        "faulty" => new FaultyDevice(new FileDevice("ssd", _directory, capacity)),
        _ => throw new ArgumentException(kind),
    };

    private TierDeviceOptions Options => new() { Directory = _directory, PreTouchMemory = false };

    [Theory]
    [MemberData(nameof(Devices))]
    public void WrittenBytesReadBackAtEveryOffset(string kind)
    {
        using var device = Make(kind, 4 << 20);
        Assert.Equal(4 << 20, device.Capacity);
        var data = RandomNumberGenerator.GetBytes(100_000);
        foreach (var offset in new long[] { 0, 1, 4095, 65536, (4 << 20) - 100_000 })
        {
            device.Write(offset, data);
            var back = new byte[data.Length];
            device.Read(offset, back);
            Assert.Equal(data, back);
        }
    }

    [Theory]
    [MemberData(nameof(Devices))]
    public void PiecesLargerThanABounceBufferAndAlignedMemoryReadBack(string kind)
    {
        using var device = Make(kind, 8 << 20);
        var data = RandomNumberGenerator.GetBytes((3 << 20) + 123);
        device.Write(777, data);
        var back = new byte[data.Length];
        device.Read(777, back);
        Assert.Equal(data, back);

        // Aligned in offset, length and memory: the path that skips the bounce buffers.
        using var aligned = new AlignedBuffer(64 << 10);
        RandomNumberGenerator.Fill(aligned.Span);
        device.Write(1 << 20, aligned.Span);
        using var alignedBack = new AlignedBuffer(64 << 10);
        device.Read(1 << 20, alignedBack.Span);
        Assert.True(aligned.Span.SequenceEqual(alignedBack.Span));
    }

    [Theory]
    [MemberData(nameof(Devices))]
    public void SmallWritesLeaveTheirNeighboursAlone(string kind)
    {
        using var device = Make(kind, 1 << 20);
        var background = RandomNumberGenerator.GetBytes(16384);
        device.Write(0, background);
        var patch = RandomNumberGenerator.GetBytes(10);
        device.Write(5000, patch);
        device.Write(4090, patch);
        patch.CopyTo(background, 5000);
        patch.CopyTo(background, 4090);
        AssertDeviceHolds(device, background);
    }

    private static void AssertDeviceHolds(IBlockDevice device, byte[] expected)
    {
        var back = new byte[expected.Length];
        device.Read(0, back);
        Assert.Equal(expected, back);
    }

    [Theory]
    [MemberData(nameof(Devices))]
    public async Task ConcurrentPartialSectorWritesOfDistinctSectorsDoNotLoseEachOther(string kind)
    {
        // Concurrent writers may not share a sector (the block store keeps them apart); each of these patches its own.
        using var device = Make(kind, 1 << 20);
        var background = RandomNumberGenerator.GetBytes(64 * 4096);
        device.Write(0, background);
        var pieces = Enumerable.Range(0, 64).Select(_ => RandomNumberGenerator.GetBytes(300)).ToArray();
        long At(int i) => (i * 4096L) + 100 + (i % 8 * 400);
        await Task.WhenAll(pieces.Select((piece, i) => Task.Run(() => device.Write(At(i), piece))));
        for (var i = 0; i < pieces.Length; i++)
        {
            pieces[i].CopyTo(background, At(i));
        }

        AssertDeviceHolds(device, background);
    }

    [Theory]
    [MemberData(nameof(Devices))]
    public async Task TheBlockStoreAdmitsOneWriterPerBlockSoConcurrentWritersNeverShareASector(string kind)
    {
        using var store = new BlockStore(Make(kind, 4 << 20), 64 << 10);
        Assert.Equal(BlockResult.Ok, store.BeginWrite(0, 300, 3));
        Assert.Equal(BlockResult.Stale, store.BeginWrite(300, 300, 3));
        store.EndWrite(0, 300, 3);

        // Writers of neighbouring blocks, each patching part of a sector at the block's end and the next one's start.
        var pieces = Enumerable.Range(0, 63).Select(_ => RandomNumberGenerator.GetBytes(600)).ToArray();
        long At(int i) => ((i + 1) * (64L << 10)) - 300;
        var statuses = await Task.WhenAll(pieces.Select((piece, i) => Task.Run(() =>
        {
            var status = store.BeginWrite(At(i), piece.Length, 5);
            if (status == BlockResult.Ok)
            {
                store.Device.Write(At(i), piece);
                store.EndWrite(At(i), piece.Length, 5);
            }

            return status;
        })));

        // Pieces i and i+1 share block i+1, so some were refused; every accepted one is intact.
        Assert.Contains(BlockResult.Ok, statuses);
        var back = new byte[600];
        for (var i = 0; i < pieces.Length; i++)
        {
            if (statuses[i] == BlockResult.Ok)
            {
                store.Device.Read(At(i), back);
                Assert.Equal(pieces[i], back);
            }
        }
    }

    [Theory]
    [MemberData(nameof(Devices))]
    public void ADiscardedRangeReadsAsZerosTakesWritesAgainAndLeavesItsNeighboursAlone(string kind)
    {
        using var device = Make(kind, 4 << 20);
        var background = RandomNumberGenerator.GetBytes(3 << 20);
        device.Write(0, background);

        // One aligned range (whole pages and sectors) and one that starts and ends inside them.
        foreach (var (offset, length) in new (long, long)[] { (256 << 10, 1 << 20), (1_500_000, 5_000) })
        {
            Assert.True(device.Discard(offset, length), $"{kind} gives no space back on this Linux file system");
            background.AsSpan((int)offset, (int)length).Clear();
            AssertDeviceHolds(device, background);
        }

        var again = RandomNumberGenerator.GetBytes(100_000);
        device.Write(300 << 10, again);
        again.CopyTo(background, 300 << 10);
        AssertDeviceHolds(device, background);
        Assert.Throws<ArgumentOutOfRangeException>(() => device.Discard((4 << 20) - 10, 11));
        Assert.True(device.Discard(0, 0));
    }

    [Fact]
    public void ADiscardedFileRangeGivesItsDiskBlocksBack()
    {
        using var device = new FileDevice(new FileDeviceOptions { Kind = "ssd", Directory = _directory, Capacity = 16 << 20, Unbuffered = true });
        Assert.True(device.AllocatedBytes < 1 << 20, $"a new file takes {device.AllocatedBytes} bytes");
        device.Write(0, RandomNumberGenerator.GetBytes(8 << 20));
        var written = device.AllocatedBytes;
        Assert.True(written >= 8 << 20, $"allocated {written} bytes after writing 8 MiB");

        Assert.True(device.Discard(1 << 20, 6 << 20));
        var punched = device.AllocatedBytes;
        Assert.True(written - punched >= 6 << 20, $"allocated {written} -> {punched} after punching 6 MiB");
        Assert.Equal(16 << 20, RandomAccess.GetLength(device.Handle));
    }

    [Fact]
    public void DiscardedMemoryLeavesTheResidentSetAndPopulatedMemoryJoinsIt()
    {
        using var device = new NativeMemoryDevice(64 << 20);
        Assert.Equal(0, device.ResidentBytes);
        device.Populate(0, 16 << 20);
        Assert.Equal(16 << 20, device.ResidentBytes);
        device.Write(40 << 20, RandomNumberGenerator.GetBytes(1 << 20));
        Assert.True(device.ResidentBytes >= 17 << 20);

        Assert.True(device.Discard(0, 16 << 20));
        Assert.True(device.ResidentBytes is >= 1 << 20 and < 16 << 20, $"{device.ResidentBytes} bytes resident after the discard");
        Assert.Equal(16 << 20, device.DiscardedBytes);
    }

    [Fact]
    public void ABlockStoreRefusesBlocksSmallerThanTheDevicesSector()
    {
        using var device = new FileDevice(new FileDeviceOptions { Kind = "ssd", Directory = _directory, Capacity = 1 << 20, Unbuffered = true, Alignment = 8192 });
        if (device.Unbuffered)
        {
            var error = Assert.Throws<ArgumentException>(() => new BlockStore(device, 4096));
            Assert.Contains("sector alignment 8192", error.Message, StringComparison.Ordinal);
        }

        using var store = new BlockStore(new FileDevice(new FileDeviceOptions { Kind = "ssd", Directory = _directory, Capacity = 1 << 20, Unbuffered = true, Alignment = 8192 }), 8192);
        Assert.Equal(8192, store.BlockSize);
    }

    [Fact]
    public void EachTierGetsItsOwnKindOfDevice()
    {
        using var dram = BlockDevices.Create(NodeTier.Dram, 1 << 20, Options);
        Assert.IsType<NativeMemoryDevice>(dram);

        using var ssd = Assert.IsType<QueuedDevice>(BlockDevices.Create(NodeTier.Ssd, 1 << 20, Options));
        Assert.Equal(64, ssd.Depth);
        var ssdFile = Assert.IsType<FileDevice>(ssd.Inner);
        Assert.Equal("ssd", ssd.Kind);

        // Unbuffered unless this file system refuses; either way the device says which and why.
        Assert.Equal(ssdFile.Unbuffered, ssdFile.BufferedReason is null);
        Assert.Equal(ssdFile.Unbuffered, HasODirect(ssdFile));
        Assert.Contains(ssdFile.Unbuffered ? "unbuffered" : "buffered", ssd.Description, StringComparison.Ordinal);

        using var hdd = Assert.IsType<QueuedDevice>(BlockDevices.Create(NodeTier.Hdd, 1 << 20, Options));
        Assert.Equal(2, hdd.Depth);
        var hddFile = Assert.IsType<FileDevice>(hdd.Inner);
        Assert.False(hddFile.Unbuffered);
        Assert.False(HasODirect(hddFile));
        Assert.Equal(1 << 20, BlockDevices.DefaultBlockSize(NodeTier.Hdd));
        Assert.Equal(64 << 10, BlockDevices.DefaultBlockSize(NodeTier.Ssd));
    }

    [Fact]
    public void AFileSystemThatRefusesUnbufferedIoLeavesTheDeviceBufferedAndSaysWhy()
    {
        using var device = new FileDevice(new FileDeviceOptions { Kind = "ssd", Directory = _directory, Capacity = 1 << 20, Unbuffered = true, RefuseUnbuffered = true });
        Assert.False(device.Unbuffered);
        Assert.False(HasODirect(device));
        Assert.Contains("refused O_DIRECT", device.BufferedReason, StringComparison.Ordinal);
        Assert.Contains("buffered (", device.Description, StringComparison.Ordinal);
    }

    [Fact]
    public void AnUnbufferedDeviceIsOpenedWithODirectAsTheKernelSeesIt()
    {
        using var device = new FileDevice(new FileDeviceOptions { Kind = "ssd", Directory = _directory, Capacity = 1 << 20, Unbuffered = true });
        if (!OperatingSystem.IsLinux())
        {
            Assert.False(device.Unbuffered);
            return;
        }

        // The kernel's own view of the open file (fdinfo flags) is the witness, not the device's word.
        Assert.Equal(device.Unbuffered, HasODirect(device));
        Assert.True(device.Unbuffered || device.BufferedReason!.Length > 0);
    }

    private static readonly TimeSpan Bound = TimeSpan.FromSeconds(120);

    [Theory]
    [InlineData(2)]
    [InlineData(64)]
    public void AQueuedDeviceRunsAtMostItsDepthAtOnceAndAdmitsInArrivalOrder(int depth)
    {
        using var gate = new GateDevice(new FileDevice("hdd", _directory, 1 << 20));
        using var queue = new QueuedDevice(gate, depth);
        using var queued = new SemaphoreSlim(0);
        queue.Queued = () => queued.Release();
        const int extra = 4;
        var threads = new List<Thread>();
        for (var i = 0; i < depth + extra; i++)
        {
            var index = i;
            var thread = new Thread(() => queue.Write(index * 4096L, new byte[100])) { IsBackground = true };
            thread.Start();
            threads.Add(thread);

            // Each request arrives only once the one before is running or queued, so arrival order is known.
            Assert.True((i < depth ? gate.EnteredSignal : queued).Wait(Bound));
        }

        Assert.Equal(depth, gate.InFlight);
        Assert.Equal(extra, queue.Waiting);
        for (var released = 1; released <= extra; released++)
        {
            // One finished request lets exactly one waiter in: the oldest.
            gate.Release(1);
            Assert.True(gate.EnteredSignal.Wait(Bound));
            Assert.Equal(depth, gate.InFlight);
            Assert.Equal(extra - released, queue.Waiting);
            Assert.Equal((depth + released - 1) * 4096L, gate.Entered.Last());
        }

        gate.Release(depth);
        foreach (var thread in threads)
        {
            Assert.True(thread.Join(Bound));
        }

        Assert.Equal(depth, gate.MaxInFlight);
        Assert.Equal(Enumerable.Range(0, depth + extra).Select(i => i * 4096L), gate.Entered);
    }

    [Theory]
    [InlineData(2)]
    [InlineData(64)]
    public void AQueuedDeviceUnderConcurrentIoLosesNoWakeupAndKeepsEveryRequestsData(int depth)
    {
        const int extra = 8;
        const int operations = 50;
        var threadCount = depth + extra;
        using var gate = new GateDevice(new NativeMemoryDevice(threadCount * 8192L, preTouch: false));
        using var queue = new QueuedDevice(gate, depth);
        using var queued = new SemaphoreSlim(0);
        var queuedCount = 0;
        queue.Queued = () =>
        {
            Interlocked.Increment(ref queuedCount);
            queued.Release();
        };
        var failures = new System.Collections.Concurrent.ConcurrentQueue<string>();
        var threads = Enumerable.Range(0, threadCount).Select(index => new Thread(() =>
        {
            var data = new byte[1000];
            var back = new byte[1000];
            for (var op = 0; op < operations; op++)
            {
                var offset = (index * 8192L) + (op % 2 * 4096);
                Random.Shared.NextBytes(data);
                queue.Write(offset, data);
                queue.Read(offset, back);
                if (!data.AsSpan().SequenceEqual(back))
                {
                    failures.Enqueue($"thread {index} operation {op} read back other bytes");
                }
            }
        })
        { IsBackground = true }).ToList();
        threads.ForEach(t => t.Start());

        // The gate holds the first requests, so the rest must queue: contention is certain, not left to chance.
        for (var i = 0; i < depth; i++)
        {
            Assert.True(gate.EnteredSignal.Wait(Bound));
        }

        for (var i = 0; i < extra; i++)
        {
            Assert.True(queued.Wait(Bound));
        }

        gate.Open();
        foreach (var thread in threads)
        {
            Assert.True(thread.Join(Bound), "a request was never admitted (a lost wakeup)");
        }

        Assert.Empty(failures);
        Assert.Equal(0, queue.Waiting);
        Assert.Equal(0, gate.InFlight);
        Assert.Equal(threadCount * operations * 2, gate.Entered.Count);
        Assert.InRange(gate.MaxInFlight, 1, depth);
        Assert.InRange(Volatile.Read(ref queuedCount), extra, threadCount * operations * 2);
    }

    private static bool HasODirect(FileDevice device)
    {
        if (!OperatingSystem.IsLinux())
        {
            return false;
        }

        var fd = device.Handle.DangerousGetHandle();
        var flagsLine = File.ReadLines($"/proc/self/fdinfo/{fd}").First(l => l.StartsWith("flags:", StringComparison.Ordinal));
        var flags = Convert.ToInt64(flagsLine["flags:".Length..].Trim(), 8);
        var direct = System.Runtime.InteropServices.RuntimeInformation.ProcessArchitecture is System.Runtime.InteropServices.Architecture.X64 ? 0x4000 : 0x10000;
        return (flags & direct) != 0;
    }

    /// <summary>Holds every request until released (or opened), counting how many run at once and in which order they came.</summary>
    private sealed class GateDevice(IBlockDevice inner) : IBlockDevice
    {
        private readonly SemaphoreSlim _gate = new(0);
        private volatile bool _open;
        private int _inFlight;
        private int _maxInFlight;

        public System.Collections.Concurrent.ConcurrentQueue<long> Entered { get; } = new();

        /// <summary>Released once per request that reaches the device.</summary>
        public SemaphoreSlim EnteredSignal { get; } = new(0);

        public int InFlight => Volatile.Read(ref _inFlight);

        public int MaxInFlight => Volatile.Read(ref _maxInFlight);

        public string Kind => inner.Kind;

        public long Capacity => inner.Capacity;

        public bool IsDirect => false;

        public void Release(int count) => _gate.Release(count);

        /// <summary>Lets every held and later request through.</summary>
        public void Open()
        {
            _open = true;
            _gate.Release(1 << 20);
        }

        public Span<byte> GetSpan(long offset, int length) => throw new NotSupportedException();

        public bool Discard(long offset, long length) => inner.Discard(offset, length);

        public void Write(long offset, ReadOnlySpan<byte> data)
        {
            Enter(offset);
            try
            {
                inner.Write(offset, data);
            }
            finally
            {
                Interlocked.Decrement(ref _inFlight);
            }
        }

        public void Read(long offset, Span<byte> destination)
        {
            Enter(offset);
            try
            {
                inner.Read(offset, destination);
            }
            finally
            {
                Interlocked.Decrement(ref _inFlight);
            }
        }

        private void Enter(long offset)
        {
            var now = Interlocked.Increment(ref _inFlight);
            int max;
            while (now > (max = Volatile.Read(ref _maxInFlight)) && Interlocked.CompareExchange(ref _maxInFlight, now, max) != max)
            {
            }

            Entered.Enqueue(offset);
            EnteredSignal.Release();
            if (!_open)
            {
                _gate.Wait();
            }
        }

        public void Dispose()
        {
            _gate.Dispose();
            EnteredSignal.Dispose();
            inner.Dispose();
        }
    }

    private sealed unsafe class AlignedBuffer(int length) : IDisposable
    {
        private readonly byte* _pointer = (byte*)System.Runtime.InteropServices.NativeMemory.AlignedAlloc((nuint)length, 4096);

        public Span<byte> Span => new(_pointer, length);

        public void Dispose() => System.Runtime.InteropServices.NativeMemory.AlignedFree(_pointer);
    }

    [Theory]
    [MemberData(nameof(Devices))]
    public void RangesOutsideTheDeviceAreRefused(string kind)
    {
        using var device = Make(kind, 1 << 20);
        Assert.Throws<ArgumentOutOfRangeException>(() => device.Write((1 << 20) - 10, new byte[11]));
        Assert.Throws<ArgumentOutOfRangeException>(() => device.Read(-1, new byte[1]));
        Assert.Throws<ArgumentOutOfRangeException>(() => device.Read(1 << 20, new byte[1]));
    }

    [Theory]
    [MemberData(nameof(Devices))]
    public void BlockStoreRejectsStaleGenerations(string kind)
    {
        using var store = new BlockStore(Make(kind, 1 << 20), 64 << 10);
        var data = RandomNumberGenerator.GetBytes(70_000);
        Assert.Equal(BlockResult.Ok, store.BeginWrite(0, data.Length, 5));
        store.Device.Write(0, data);
        store.EndWrite(0, data.Length, 5);

        var back = new byte[data.Length];
        Assert.Equal(BlockResult.Ok, store.Read(0, back, 5));
        Assert.Equal(data, back);
        Assert.Equal(BlockResult.Stale, store.Read(0, back, 4));

        // A newer allocation takes the blocks; the old generation can neither read nor write them.
        Assert.Equal(BlockResult.Ok, store.BeginWrite(0, 10, 9));
        store.EndWrite(0, 10, 9);
        Assert.Equal(BlockResult.Stale, store.Read(0, back, 5));
        Assert.Equal(BlockResult.Stale, store.BeginWrite(0, 10, 5));
    }

    [Fact]
    public void AResetNeverLetsANewAllocationIntoABlockAnOldWriteIsStillWriting()
    {
        using var store = new BlockStore(new NativeMemoryDevice(1 << 20, preTouch: false), 64 << 10);
        Assert.Equal(BlockResult.Ok, store.BeginWrite(0, 100_000, 7));
        Assert.Equal(BlockResult.Ok, store.BeginWrite(128 << 10, 10, 7));
        store.EndWrite(128 << 10, 10, 7);

        store.Reset();

        // An idle block is forgotten and free at once; one still being written stays out of reach.
        Assert.False(store.Holds(128 << 10, 10, 7));
        Assert.Equal(BlockResult.Ok, store.BeginWrite(128 << 10, 10, 1));
        store.EndWrite(128 << 10, 10, 1);
        Assert.Equal(BlockResult.Stale, store.BeginWrite(64 << 10, 10, 1));
        Assert.Equal(BlockResult.Stale, store.BeginWrite(0, 10, 9));

        // The old write ends: its blocks belong to no one and hold nothing readable.
        store.EndWrite(0, 100_000, 7);
        var back = new byte[10];
        Assert.Equal(BlockResult.Stale, store.Read(0, back, 7));
        Assert.False(store.Holds(64 << 10, 10, 7));
        Assert.Equal(BlockResult.Ok, store.BeginWrite(0, 100_000, 1));
        store.EndWrite(0, 100_000, 1);
        Assert.Equal(BlockResult.Ok, store.Read(0, back, 1));
    }

    [Fact]
    public void FaultyDeviceFailsOnDemandAndThenWorks()
    {
        using var device = new FaultyDevice(new NativeMemoryDevice(1 << 20, preTouch: false));
        device.FailWriteAfter(1);
        device.Write(0, new byte[10]);
        Assert.Throws<DeviceException>(() => device.Write(0, new byte[10]));
        device.Write(0, new byte[10]);
        device.SpaceLimit = 100;
        Assert.True(Assert.Throws<DeviceException>(() => device.Write(90, new byte[11])).IsNoSpace);
    }

    [Fact]
    public async Task InjectedDeviceErrorsFailOneRequestAndTheNodeKeepsServing()
    {
        FaultyDevice? faulty = null;
        await using var cluster = await PocketCluster.StartAsync(new PocketClusterOptions { StorageNodes = 0, PreTouchMemory = false });
        await cluster.AddNodeAsync(8 << 20, o => faulty = new FaultyDevice(new FileDevice("ssd", _directory, o.Capacity)));
        await using var client = await cluster.ConnectAsync();
        var job = await cluster.Admin(client).RegisterJobAsync("faults");
        var before = RandomNumberGenerator.GetBytes(300_000);
        await job.PutAsync("before", before);

        faulty!.FailWriteAfter(0);
        var error = await Assert.ThrowsAnyAsync<PocketException>(async () => await job.PutAsync("broken", RandomNumberGenerator.GetBytes(300_000)));
        Assert.Equal(Status.IoError, error.Status);
        Assert.Contains("injected", error.Message, StringComparison.Ordinal);
        Assert.False(await job.ExistsAsync("broken"));

        faulty.FailReadAfter(0);
        var readError = await Assert.ThrowsAnyAsync<PocketException>(async () => await job.GetAsync("before"));
        Assert.Equal(Status.IoError, readError.Status);

        // The node still serves, and the data stored before is intact.
        Assert.Equal(before, await job.GetAsync("before"));
        var after = RandomNumberGenerator.GetBytes(300_000);
        await job.PutAsync("after", after);
        Assert.Equal(after, await job.GetAsync("after"));
        Assert.Equal(2, await job.CountAsync());
    }

    [Fact]
    public async Task AFullDiskGivesAClearErrorAndLeavesNoPartialObject()
    {
        FaultyDevice? faulty = null;
        await using var cluster = await PocketCluster.StartAsync(new PocketClusterOptions { StorageNodes = 0, PreTouchMemory = false });
        await cluster.AddNodeAsync(8 << 20, o => faulty = new FaultyDevice(new FileDevice("hdd", _directory, o.Capacity)));
        await using var client = await cluster.ConnectAsync();
        var job = await cluster.Admin(client).RegisterJobAsync("fulldisk");
        faulty!.SpaceLimit = 2 << 20;
        var error = await Assert.ThrowsAnyAsync<PocketException>(async () => await job.PutAsync("big", new byte[4 << 20]));
        Assert.Contains("no space", error.Message, StringComparison.OrdinalIgnoreCase);
        Assert.Equal(Status.CapacityExceeded, error.Status);
        Assert.Equal(0, await job.CountAsync());
        var nodes = await cluster.Admin(client).GetNodesAsync();
        Assert.Equal(0, nodes.Single().Used);

        faulty.SpaceLimit = long.MaxValue;
        await job.PutAsync("big", new byte[4 << 20]);
        Assert.Equal(4 << 20, (await job.LookupAsync("big"))!.Size);
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
}
