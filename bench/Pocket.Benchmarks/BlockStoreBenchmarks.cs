using BenchmarkDotNet.Attributes;
using Pocket.Protocol;
using Pocket.Storage;

namespace Pocket.Benchmarks;

/// <summary>
/// The storage node's data path without the socket: claim the blocks of an extent, copy into the DRAM
/// device, release them (what WriteExtent does), and the checked copy out (ReadExtent). The device is
/// pre-faulted before timing, as a serving node's is.
/// </summary>
[MemoryDiagnoser]
public class BlockStoreBenchmarks
{
    private const int BlockSize = 64 << 10;
    private const long Capacity = 64L << 20;
    private const uint Generation = 7;

    private BlockStore _store = null!;
    private byte[] _data = [];
    private byte[] _destination = [];
    private long _offset;

    [Params(4 << 10, 1 << 20)]
    public int Size { get; set; }

    [GlobalSetup]
    public void Setup()
    {
        var device = new NativeMemoryDevice(Capacity);
        while (device.TouchedBytes < device.Capacity)
        {
            Thread.Sleep(10);
        }

        _store = new BlockStore(device, BlockSize);
        _data = new byte[Size];
        Random.Shared.NextBytes(_data);
        _destination = new byte[Size];
        _offset = 8L << 20;
        Write();
    }

    [GlobalCleanup]
    public void Cleanup() => _store.Dispose();

    [Benchmark]
    public BlockResult Write()
    {
        var status = _store.BeginWrite(_offset, Size, Generation);
        if (status != BlockResult.Ok)
        {
            return status;
        }

        _store.Device.Write(_offset, _data);
        _store.EndWrite(_offset, Size, Generation);
        return status;
    }

    [Benchmark]
    public BlockResult Read() => _store.Read(_offset, _destination, Generation);
}
