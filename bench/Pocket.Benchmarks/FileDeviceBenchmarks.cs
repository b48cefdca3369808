using BenchmarkDotNet.Attributes;
using Pocket.Storage;

namespace Pocket.Benchmarks;

/// <summary>
/// The ssd tier's file device, buffered against unbuffered (O_DIRECT), from managed (unaligned) buffers, which take
/// the bounce path, or from sector-aligned <see cref="AlignedMemory"/> as the storage server passes them, which goes
/// straight to the file: sequential writes through a 256 MiB file and random reads of what was written.
/// The file lives in the temp directory, so the numbers are this machine's disk and page cache.
/// </summary>
public class FileDeviceBenchmarks
{
    private const long Capacity = 256L << 20;

    private FileDevice _device = null!;
    private string _directory = string.Empty;
    private Memory<byte> _data;
    private Memory<byte> _destination;
    private AlignedMemory? _alignedData;
    private AlignedMemory? _alignedDestination;
    private long _writeOffset;
    private int _readIndex;
    private long[] _readOffsets = [];

    [Params(false, true)]
    public bool Unbuffered { get; set; }

    [Params(64 << 10, 1 << 20)]
    public int Size { get; set; }

    [Params(false, true)]
    public bool AlignedBuffers { get; set; }

    [GlobalSetup]
    public void Setup()
    {
        _directory = Directory.CreateTempSubdirectory("pocket-bench-").FullName;
        _device = new FileDevice(new FileDeviceOptions { Kind = "ssd", Directory = _directory, Capacity = Capacity, Unbuffered = Unbuffered });
        if (Unbuffered && !_device.Unbuffered)
        {
            throw new InvalidOperationException($"unbuffered I/O is not available here: {_device.BufferedReason}");
        }

        if (AlignedBuffers)
        {
            _alignedData = new AlignedMemory(Size, 4096);
            _alignedDestination = new AlignedMemory(Size, 4096);
            (_data, _destination) = (_alignedData.Memory, _alignedDestination.Memory);
        }
        else
        {
            (_data, _destination) = (new byte[Size], new byte[Size]);
        }

        Random.Shared.NextBytes(_data.Span);
        for (long offset = 0; offset + Size <= Capacity; offset += Size)
        {
            _device.Write(offset, _data.Span);
        }

        var random = new Random(42);
        _readOffsets = [.. Enumerable.Range(0, 4096).Select(_ => random.NextInt64(Capacity / Size) * Size)];
    }

    [GlobalCleanup]
    public void Cleanup()
    {
        _device.Dispose();
        ((IDisposable?)_alignedData)?.Dispose();
        ((IDisposable?)_alignedDestination)?.Dispose();
        Directory.Delete(_directory, recursive: true);
    }

    [Benchmark]
    public void Write()
    {
        _device.Write(_writeOffset, _data.Span);
        _writeOffset = _writeOffset + (2 * Size) > Capacity ? 0 : _writeOffset + Size;
    }

    [Benchmark]
    public void Read()
    {
        _device.Read(_readOffsets[_readIndex], _destination.Span);
        _readIndex = (_readIndex + 1) % _readOffsets.Length;
    }
}
