namespace Pocket.Storage;

/// <summary>
/// Wraps a device and adds latency per request and a bandwidth cap, so the slow tiers' paths (and the
/// controller's tier choices) can be exercised on any machine. Delays block the calling (connection) thread.
/// </summary>
public sealed class SimulatedDevice : IBlockDevice
{
    private readonly IBlockDevice _inner;
    private readonly TimeSpan _latency;
    private readonly double _bytesPerSecond;

    public SimulatedDevice(IBlockDevice inner, string kind, TimeSpan latency, double bytesPerSecond)
    {
        _inner = inner;
        Kind = kind;
        _latency = latency;
        _bytesPerSecond = bytesPerSecond;
    }

    public string Kind { get; }

    public long Capacity => _inner.Capacity;

    public bool IsDirect => false;

    public int Alignment => _inner.Alignment;

    public Span<byte> GetSpan(long offset, int length) => throw new NotSupportedException("simulated devices are not directly addressable");

    public void Write(long offset, ReadOnlySpan<byte> data)
    {
        Delay(data.Length);
        _inner.Write(offset, data);
    }

    public void Read(long offset, Span<byte> destination)
    {
        Delay(destination.Length);
        _inner.Read(offset, destination);
    }

    private void Delay(int bytes)
    {
        var delay = _latency + (_bytesPerSecond > 0 ? TimeSpan.FromSeconds(bytes / _bytesPerSecond) : TimeSpan.Zero);
        if (delay > TimeSpan.Zero)
        {
            Thread.Sleep(delay);
        }
    }

    public bool Discard(long offset, long length) => _inner.Discard(offset, length);

    public void Populate(long offset, long length) => _inner.Populate(offset, length);

    public void Dispose() => _inner.Dispose();
}
