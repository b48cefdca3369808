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

    /// <summary>
    /// Offset, length and memory alignment at which a request goes straight to the medium without a bounce copy (the
    /// sector size of an unbuffered file device); 1 when any request does. Buffers from <see cref="AlignedMemory"/> of
    /// this alignment meet the memory part.
    /// </summary>
    int Alignment => 1;

    /// <summary>What the device is and how it does I/O, for logs (e.g. whether a file device bypasses the page cache).</summary>
    string Description => Kind;

    /// <summary>The device's memory for [offset, offset+length); only when <see cref="IsDirect"/>.</summary>
    Span<byte> GetSpan(long offset, int length);

    /// <summary>
    /// Writes <paramref name="data"/> at <paramref name="offset"/>. Requests may run concurrently, but two that write
    /// the same <see cref="Alignment"/>-sized sector must not (an unbuffered file device rewrites a partial sector
    /// whole, so one would undo the other). <see cref="BlockStore"/> guarantees it: a sector lies inside one block,
    /// and a block has one writer at a time (its busy bit).
    /// </summary>
    void Write(long offset, ReadOnlySpan<byte> data);

    void Read(long offset, Span<byte> destination);

    /// <summary>
    /// Gives the medium behind [offset, offset+length) back (the memory to the OS, the file's blocks to the file
    /// system): the data there is gone and the range reads as zeros until written again. Returns false when this device
    /// cannot give space back (its contents then stay as they were). The caller makes sure nothing reads or writes the
    /// range meanwhile (<see cref="BlockStore"/> claims the blocks first).
    /// </summary>
    bool Discard(long offset, long length);

    /// <summary>
    /// Makes [offset, offset+length) ready for writes before they come (a memory device faults its pages in), without
    /// changing what it holds; safe while requests run. Devices with nothing to prepare do nothing.
    /// </summary>
    void Populate(long offset, long length)
    {
    }
}
