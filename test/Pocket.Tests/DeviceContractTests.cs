using System.Security.Cryptography;
using Pocket.Client;
using Pocket.Protocol;
using Pocket.Storage;
using Pocket.Testing;

namespace Pocket.Tests;

/// <summary>One contract, run against every device.</summary>
public sealed class DeviceContractTests : IDisposable
{
    private readonly string _directory = Directory.CreateTempSubdirectory("pocket-device-").FullName;

    public static TheoryData<string> Devices => ["dram", "ssd", "hdd", "simulated", "faulty"];

    private IBlockDevice Make(string kind, long capacity) => kind switch
    {
        "dram" => new NativeMemoryDevice(capacity, preTouch: false),
        "ssd" or "hdd" => new FileDevice(kind, _directory, capacity),
        "simulated" => new SimulatedDevice(new NativeMemoryDevice(capacity, preTouch: false), "simulated", TimeSpan.Zero, 0),
        "faulty" => new FaultyDevice(new FileDevice("ssd", _directory, capacity)),
        _ => throw new ArgumentException(kind),
    };

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
        Assert.Equal(Status.Ok, store.BeginWrite(0, data.Length, 5));
        store.Device.Write(0, data);
        store.EndWrite(0, data.Length, 5);

        var back = new byte[data.Length];
        Assert.Equal(Status.Ok, store.Read(0, back, 5));
        Assert.Equal(data, back);
        Assert.Equal(Status.StaleGrant, store.Read(0, back, 4));

        // A newer allocation takes the blocks; the old generation can neither read nor write them.
        Assert.Equal(Status.Ok, store.BeginWrite(0, 10, 9));
        store.EndWrite(0, 10, 9);
        Assert.Equal(Status.StaleGrant, store.Read(0, back, 5));
        Assert.Equal(Status.StaleGrant, store.BeginWrite(0, 10, 5));
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
        var job = await client.RegisterJobAsync("faults");
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
        var job = await client.RegisterJobAsync("fulldisk");
        faulty!.SpaceLimit = 2 << 20;
        var error = await Assert.ThrowsAnyAsync<PocketException>(async () => await job.PutAsync("big", new byte[4 << 20]));
        Assert.Contains("no space", error.Message, StringComparison.OrdinalIgnoreCase);
        Assert.Equal(0, await job.CountAsync());
        var nodes = await client.GetNodesAsync();
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
