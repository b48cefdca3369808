namespace Pocket.Storage;

/// <summary>
/// Wraps a device and fails requests on demand (an I/O error, or "no space" past a fill level), for tests of
/// what a node does when its disk misbehaves.
/// </summary>
public sealed class FaultyDevice : IBlockDevice
{
    private readonly IBlockDevice _inner;
    private long _writesUntilFailure = -1;
    private long _readsUntilFailure = -1;

    public FaultyDevice(IBlockDevice inner) => _inner = inner;

    public string Kind => _inner.Kind;

    public long Capacity => _inner.Capacity;

    public bool IsDirect => false;

    public int Alignment => _inner.Alignment;

    /// <summary>Writes ending past this offset fail with "no space" (simulates a full file system).</summary>
    public long SpaceLimit { get; set; } = long.MaxValue;

    /// <summary>Makes the n-th next write fail (0 = the next one); -1 disables.</summary>
    public void FailWriteAfter(long writes) => Interlocked.Exchange(ref _writesUntilFailure, writes);

    /// <summary>Makes the n-th next read fail (0 = the next one); -1 disables.</summary>
    public void FailReadAfter(long reads) => Interlocked.Exchange(ref _readsUntilFailure, reads);

    public Span<byte> GetSpan(long offset, int length) => throw new NotSupportedException("faulty devices are not directly addressable");

    public void Write(long offset, ReadOnlySpan<byte> data)
    {
        if (offset + data.Length > SpaceLimit)
        {
            throw new DeviceException($"{Kind} write at {offset}: no space left on device") { IsNoSpace = true };
        }

        if (Trip(ref _writesUntilFailure))
        {
            throw new DeviceException($"{Kind} write at {offset}: injected I/O error");
        }

        _inner.Write(offset, data);
    }

    public void Read(long offset, Span<byte> destination)
    {
        if (Trip(ref _readsUntilFailure))
        {
            throw new DeviceException($"{Kind} read at {offset}: injected I/O error");
        }

        _inner.Read(offset, destination);
    }

    private static bool Trip(ref long counter)
    {
        while (true)
        {
            var current = Interlocked.Read(ref counter);
            if (current < 0)
            {
                return false;
            }

            if (Interlocked.CompareExchange(ref counter, current - 1, current) == current)
            {
                return current == 0;
            }
        }
    }

    public bool Discard(long offset, long length) => _inner.Discard(offset, length);

    public void Populate(long offset, long length) => _inner.Populate(offset, length);

    public void Dispose() => _inner.Dispose();
}
