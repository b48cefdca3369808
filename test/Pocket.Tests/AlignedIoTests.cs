using System.Security.Cryptography;
using Pocket.Admin;
using Pocket.Embedded;
using Pocket.Protocol;
using Pocket.Storage;
using Pocket.StorageServer;

namespace Pocket.Tests;

/// <summary>Sector-aligned buffers: block-aligned I/O on an unbuffered device skips the bounce copy, and the buffers are freed.</summary>
public sealed class AlignedIoTests : IDisposable
{
    private readonly string _directory = Directory.CreateTempSubdirectory("pocket-aligned-").FullName;

    private FileDevice Unbuffered(long capacity) =>
        new(new FileDeviceOptions { Kind = "ssd", Directory = _directory, Capacity = capacity, Unbuffered = true });

    [Fact]
    public void AlignedRequestsGoStraightToAnUnbufferedDeviceAndOnlyUnalignedPartsBounce()
    {
        using var device = Unbuffered(1 << 20);
        if (!device.Unbuffered)
        {
            // Nothing to bypass where the file system refuses O_DIRECT; the device says why.
            Assert.False(string.IsNullOrEmpty(device.BufferedReason));
            Assert.Equal(1, device.Alignment);
            return;
        }

        Assert.Equal(4096, device.Alignment);
        using var block = new AlignedMemory(64 << 10, device.Alignment);
        using var back = new AlignedMemory(64 << 10, device.Alignment);
        RandomNumberGenerator.Fill(block.GetSpan());

        // One block, aligned in offset, length and memory: straight to the file both ways.
        device.Write(64 << 10, block.GetSpan());
        device.Read(64 << 10, back.GetSpan());
        Assert.True(block.GetSpan().SequenceEqual(back.GetSpan()));
        Assert.Equal(0, device.BouncedIos);
        Assert.Equal(2, device.DirectIos);
        Assert.Equal(0, device.LiveBounceBuffers);

        // An odd length from aligned memory: the whole sectors go straight, only the last partial sector bounces.
        var odd = block.GetSpan()[..50_000];
        device.Write(0, odd);
        device.Read(0, back.GetSpan()[..50_000]);
        Assert.True(odd.SequenceEqual(back.GetSpan()[..50_000]));
        Assert.Equal(4, device.DirectIos);
        Assert.Equal(2, device.BouncedIos);

        // Memory off the sector boundary: the whole request bounces, and the data is still intact.
        device.Write(128 << 10, block.GetSpan()[1..8193]);
        device.Read(128 << 10, back.GetSpan()[1..8193]);
        Assert.True(block.GetSpan()[1..8193].SequenceEqual(back.GetSpan()[1..8193]));
        Assert.Equal(4, device.DirectIos);
        Assert.Equal(4, device.BouncedIos);

        // The block written straight still reads back through a bounce (and the reverse).
        var plain = new byte[64 << 10];
        device.Read(64 << 10, plain);
        Assert.True(block.GetSpan().SequenceEqual(plain));
    }

    [Fact]
    public void TheDeviceStackReportsTheSectorAlignmentAndABufferedDeviceNeedsNone()
    {
        var options = new TierDeviceOptions { Directory = _directory, PreTouchMemory = false };
        using var ssd = Assert.IsType<QueuedDevice>(BlockDevices.Create(NodeTier.Ssd, 1 << 20, options));
        Assert.Equal(((FileDevice)ssd.Inner).Unbuffered ? 4096 : 1, ssd.Alignment);
        using var faulty = new FaultyDevice(Unbuffered(1 << 20));
        using var simulated = new SimulatedDevice(Unbuffered(1 << 20), "simulated", TimeSpan.Zero, 0);
        Assert.Equal(ssd.Alignment, faulty.Alignment);
        Assert.Equal(ssd.Alignment, simulated.Alignment);

        using var buffered = new FileDevice("hdd", _directory, 1 << 20);
        using var dram = new NativeMemoryDevice(1 << 20, preTouch: false);
        Assert.Equal(1, buffered.Alignment);
        Assert.Equal(1, ((IBlockDevice)dram).Alignment);
        buffered.Write(1, new byte[5000]);
        Assert.Equal(0, buffered.DirectIos + buffered.BouncedIos);
    }

    [Fact]
    public void AlignedMemoryIsAlignedFreedOnceAndRefusedAfterwards()
    {
        var memory = new AlignedMemory(10_000, 8192);
        unsafe
        {
            using var pin = memory.Memory.Pin();
            Assert.Equal(0, (nint)pin.Pointer % 8192);
        }

        memory.GetSpan().Fill(7);
        Assert.Equal(10_000, memory.Memory.Length);
        ((IDisposable)memory).Dispose();
        Assert.True(memory.IsDisposed);
        Assert.Throws<ObjectDisposedException>(() => memory.GetSpan());
        Assert.Throws<ObjectDisposedException>(() => memory.Pin());
        ((IDisposable)memory).Dispose();

        Assert.Throws<ArgumentOutOfRangeException>(() => new AlignedMemory(0, 4096));
        Assert.Throws<ArgumentException>(() => new AlignedMemory(4096, 3000));
    }

    [Fact]
    public void ADisposedFileDeviceFreesItsBounceBuffers()
    {
        var device = Unbuffered(1 << 20);
        device.Write(100, new byte[10_000]);
        device.Read(100, new byte[10_000]);
        Assert.Equal(device.Unbuffered ? 1 : 0, device.LiveBounceBuffers);
        device.Dispose();
        Assert.Equal(0, device.LiveBounceBuffers);
        Assert.Throws<ObjectDisposedException>(() => device.Read(0, new byte[10]));
    }

    [Fact]
    public async Task AStorageNodeMovesBlockAlignedObjectsWithoutBounceCopiesAndFreesItsBuffers()
    {
        FileDevice? file = null;
        var cluster = await PocketCluster.StartAsync(new PocketClusterOptions { StorageNodes = 0, PreTouchMemory = false });
        try
        {
            var index = await cluster.AddNodeAsync(8 << 20, o => new QueuedDevice(file = Unbuffered(o.Capacity), 64), tier: NodeTier.Ssd);
            var node = cluster.Nodes[index]!;
            await using var client = await cluster.ConnectAsync();
            var job = await cluster.Admin(client).RegisterJobAsync("aligned", NodeTier.Ssd);
            var block = RandomNumberGenerator.GetBytes(64 << 10);
            var large = RandomNumberGenerator.GetBytes(3 << 20);
            await job.PutAsync("block", block);
            await job.PutAsync("large", large);
            Assert.Equal(block, await job.GetAsync("block"));
            Assert.Equal(large, await job.GetAsync("large"));
            if (file!.Unbuffered)
            {
                Assert.True(file.DirectIos >= 4, $"{file.DirectIos} direct I/Os");
                Assert.Equal(0, file.BouncedIos);
            }

            // An odd size still round-trips: only its last partial sector takes the bounce path.
            var odd = RandomNumberGenerator.GetBytes(100_000);
            await job.PutAsync("odd", odd);
            Assert.Equal(odd, await job.GetAsync("odd"));
            Assert.Equal(file.Unbuffered ? 2 : 0, file.BouncedIos);

            Assert.True(node.LiveBuffers > 0);
            await cluster.StopNodeAsync(index);
            Assert.Equal(0, node.LiveBuffers);
            Assert.Equal(0, file.LiveBounceBuffers);
        }
        finally
        {
            await cluster.DisposeAsync();
        }
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
