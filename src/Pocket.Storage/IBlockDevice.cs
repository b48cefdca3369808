namespace Pocket.Storage;

/// <summary>
/// One device interface for every tier (after Tsavorite's IDevice): byte-addressed, fixed capacity.
/// Memory devices also hand out spans so a server can read a socket straight into place.
/// </summary>
public interface IBlockDevice : IDisposable
{
    /// <summary>"dram", "ssd", "hdd", ...</summary>
    string Kind { get; }

    long Capacity { get; }

    /// <summary>True when <see cref="GetSpan"/> works (memory devices).</summary>
    bool IsDirect { get; }

    /// <summary>What the device is and how it does I/O, for logs (e.g. whether a file device bypasses the page cache).</summary>
    string Description => Kind;

    /// <summary>The device's memory for [offset, offset+length); only when <see cref="IsDirect"/>.</summary>
    Span<byte> GetSpan(long offset, int length);

    void Write(long offset, ReadOnlySpan<byte> data);

    void Read(long offset, Span<byte> destination);
}
