using Pocket.Storage;

namespace Pocket.StorageServer;

/// <summary>
/// Buffers for reads, shared by the node's connections and kept warm between them. A read's buffer holds the bytes
/// only from the device read until the reply is written or copied into the connection's reply buffer, so it goes
/// back as soon as the handler has replied. A buffer of its own per connection was fresh memory for every new
/// connection: a function's first 64 KiB get took 16 page faults on the node (its heap grew for each connection).
/// Reads longer than <see cref="MaxPooled"/> keep the connection's own buffer, reused by that connection's next read.
/// </summary>
internal sealed class ReadBuffers(int alignment, long keepBytes) : IDisposable
{
    /// <summary>The longest read served from the pool.</summary>
    public const int MaxPooled = 1 << 20;

    private const int MinBuffer = 64 << 10;

    private readonly Lock _lock = new();
    private readonly List<AlignedMemory> _free = [];
    private long _kept;
    private long _allocated;
    private int _rented;
    private bool _disposed;

    /// <summary>Buffers made so far (tests: fresh connections' reads reuse them).</summary>
    public long Allocated => Interlocked.Read(ref _allocated);

    /// <summary>Buffers rented and not yet given back (tests: a read's handler gives its buffer back after the reply is sent).</summary>
    public int Rented => Volatile.Read(ref _rented);

    /// <summary>A buffer of at least <paramref name="length"/> (at most <see cref="MaxPooled"/>) bytes: a kept one that fits, else a new one.</summary>
    public AlignedMemory Rent(int length)
    {
        lock (_lock)
        {
            _rented++;
            var best = -1;
            for (var i = 0; i < _free.Count; i++)
            {
                if (_free[i].Length >= length && (best < 0 || _free[i].Length < _free[best].Length))
                {
                    best = i;
                }
            }

            if (best >= 0)
            {
                var buffer = _free[best];
                _free[best] = _free[^1];
                _free.RemoveAt(_free.Count - 1);
                _kept -= buffer.Length;
                return buffer;
            }
        }

        Interlocked.Increment(ref _allocated);
        var size = (int)Math.Max(System.Numerics.BitOperations.RoundUpToPowerOf2((uint)Math.Max(length, MinBuffer)), (uint)alignment);
        return new AlignedMemory(size, alignment);
    }

    /// <summary>Keeps the buffer for the next read while the kept bytes stay within the bound; frees it otherwise.</summary>
    public void Return(AlignedMemory buffer)
    {
        lock (_lock)
        {
            _rented--;
            if (!_disposed && _kept + buffer.Length <= keepBytes)
            {
                _free.Add(buffer);
                _kept += buffer.Length;
                return;
            }
        }

        ((IDisposable)buffer).Dispose();
    }

    public void Dispose()
    {
        AlignedMemory[] free;
        lock (_lock)
        {
            _disposed = true;
            free = [.. _free];
            _free.Clear();
            _kept = 0;
        }

        foreach (var buffer in free)
        {
            ((IDisposable)buffer).Dispose();
        }
    }
}
