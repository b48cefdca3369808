using Microsoft.Win32.SafeHandles;

namespace Pocket.Storage;

/// <summary>
/// The flash and disk tiers: one file of the configured capacity in a directory, read and written with
/// positional I/O (<see cref="RandomAccess"/>), safe for concurrent requests. The file is sparse, so a full
/// file system shows up as a failed write (a <see cref="DeviceException"/>), never as a crash.
/// </summary>
public sealed class FileDevice : IBlockDevice
{
    private readonly SafeFileHandle _handle;

    public FileDevice(string kind, string directory, long capacity)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(capacity);
        Directory.CreateDirectory(directory);
        Kind = kind;
        Capacity = capacity;
        Path = System.IO.Path.Combine(directory, $"pocket-{kind}-{Environment.ProcessId}-{Guid.NewGuid():N}.blocks");
        _handle = File.OpenHandle(Path, FileMode.CreateNew, FileAccess.ReadWrite, FileShare.None, FileOptions.DeleteOnClose);
        RandomAccess.SetLength(_handle, capacity);
    }

    public string Kind { get; }

    public long Capacity { get; }

    /// <summary>The backing file (deleted when the device is disposed).</summary>
    public string Path { get; }

    public bool IsDirect => false;

    public Span<byte> GetSpan(long offset, int length) => throw new NotSupportedException("file devices are not directly addressable");

    public void Write(long offset, ReadOnlySpan<byte> data)
    {
        CheckRange(offset, data.Length);
        try
        {
            RandomAccess.Write(_handle, data, offset);
        }
        catch (IOException ex)
        {
            throw new DeviceException($"{Kind} write of {data.Length} bytes at {offset} failed: {ex.Message}", ex) { IsNoSpace = IsNoSpace(ex) };
        }
    }

    public void Read(long offset, Span<byte> destination)
    {
        CheckRange(offset, destination.Length);
        try
        {
            var done = 0;
            while (done < destination.Length)
            {
                var n = RandomAccess.Read(_handle, destination[done..], offset + done);
                if (n == 0)
                {
                    destination[done..].Clear();
                    break;
                }

                done += n;
            }
        }
        catch (IOException ex)
        {
            throw new DeviceException($"{Kind} read of {destination.Length} bytes at {offset} failed: {ex.Message}", ex);
        }
    }

    private static bool IsNoSpace(IOException ex) => ex.HResult is 28 or unchecked((int)0x80070070) || ex.Message.Contains("space", StringComparison.OrdinalIgnoreCase);

    private void CheckRange(long offset, int length)
    {
        if (offset < 0 || length < 0 || offset > Capacity - length)
        {
            throw new ArgumentOutOfRangeException(nameof(offset), $"range {offset}+{length} is outside the device (capacity {Capacity})");
        }
    }

    public void Dispose() => _handle.Dispose();
}
