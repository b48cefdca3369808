using System.Collections.Concurrent;
using System.Runtime.InteropServices;
using Microsoft.Win32.SafeHandles;

namespace Pocket.Storage;

/// <summary>Settings of a <see cref="FileDevice"/>.</summary>
public sealed record FileDeviceOptions
{
    /// <summary>"ssd", "hdd", ... (names the file and the device in messages).</summary>
    public required string Kind { get; init; }

    /// <summary>Directory the backing file is made in.</summary>
    public required string Directory { get; init; }

    /// <summary>Bytes the device holds.</summary>
    public required long Capacity { get; init; }

    /// <summary>
    /// Bypass the page cache (O_DIRECT on Linux) when the file system allows it; when it does not, the device
    /// stays buffered and says why in <see cref="FileDevice.BufferedReason"/>.
    /// </summary>
    public bool Unbuffered { get; init; }

    /// <summary>Offset, length and memory alignment unbuffered I/O needs: 4096 covers 512-byte and 4K-sector disks.</summary>
    public int Alignment { get; init; } = 4096;

    /// <summary>Size of each pooled aligned bounce buffer; larger requests go through it in pieces.</summary>
    public int BounceBufferSize { get; init; } = 1 << 20;

    /// <summary>Hint the kernel that reads run sequentially (read-ahead), as on a disk holding large extents.</summary>
    public bool SequentialHint { get; init; }

    /// <summary>Test hook: act as if the file system refused unbuffered I/O, to exercise the fallback.</summary>
    internal bool RefuseUnbuffered { get; init; }
}

/// <summary>
/// The flash and disk tiers: one sparse file of the configured capacity, read and written with positional I/O
/// (<see cref="RandomAccess"/>), safe for concurrent requests that do not write the same sector (see
/// <see cref="IBlockDevice.Write"/>), gone when the device or its process ends. With <see cref="FileDeviceOptions.Unbuffered"/> it
/// bypasses the page cache: the sector-aligned middle of a request goes straight to the file when its memory is
/// aligned too (<see cref="AlignedMemory"/> of <see cref="Alignment"/>); the unaligned ends, or the whole request
/// when its memory is not aligned, go through pooled, aligned bounce buffers (reading the partial first and last
/// sectors first). A full file system shows up as a failed write (a <see cref="DeviceException"/>), never as a crash.
/// </summary>
public sealed unsafe class FileDevice : IBlockDevice
{
    private readonly SafeFileHandle _handle;
    private readonly int _alignment;
    private readonly int _bounceSize;
    private readonly ConcurrentBag<IntPtr> _bounces = [];
    private volatile bool _disposed;
    private long _directIos;
    private long _bouncedIos;
    private int _liveBounceBuffers;

    /// <summary>A buffered device: <c>new FileDevice(new FileDeviceOptions { ... })</c> for the other settings.</summary>
    public FileDevice(string kind, string directory, long capacity)
        : this(new FileDeviceOptions { Kind = kind, Directory = directory, Capacity = capacity })
    {
    }

    public FileDevice(FileDeviceOptions options)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(options.Capacity);
        if (options.Alignment < 512 || (options.Alignment & (options.Alignment - 1)) != 0)
        {
            throw new ArgumentException($"alignment {options.Alignment} must be a power of two of at least 512", nameof(options));
        }

        if (options.BounceBufferSize < options.Alignment || options.BounceBufferSize % options.Alignment != 0)
        {
            throw new ArgumentException($"bounce buffer size {options.BounceBufferSize} must be a multiple of the alignment {options.Alignment}", nameof(options));
        }

        System.IO.Directory.CreateDirectory(options.Directory);
        Kind = options.Kind;
        Capacity = options.Capacity;
        _alignment = options.Alignment;
        _bounceSize = options.BounceBufferSize;
        Path = System.IO.Path.Combine(options.Directory, $"pocket-{options.Kind}-{Environment.ProcessId}-{Guid.NewGuid():N}.blocks");
        // On Unix the name is removed as soon as the file is open, so the file goes away with the process
        // however it ends (a killed node leaves no file behind); Windows cannot remove an open file's name.
        var fileOptions = (OperatingSystem.IsWindows() ? FileOptions.DeleteOnClose : FileOptions.None)
            | (options.SequentialHint ? FileOptions.SequentialScan : FileOptions.RandomAccess);
        _handle = File.OpenHandle(Path, FileMode.CreateNew, FileAccess.ReadWrite, FileShare.None, fileOptions);
        try
        {
            if (!OperatingSystem.IsWindows())
            {
                File.Delete(Path);
            }

            // Rounded up so the last sector can be written whole; the store never uses the bytes past Capacity.
            RandomAccess.SetLength(_handle, AlignUp(options.Capacity));
            BufferedReason = options.Unbuffered ? TryUnbuffered(options.RefuseUnbuffered) : "buffered by configuration";
        }
        catch
        {
            _handle.Dispose();
            throw;
        }
    }

    public string Kind { get; }

    public long Capacity { get; }

    /// <summary>The backing file's name (on Unix removed once open: the file lives as long as the device).</summary>
    public string Path { get; }

    /// <summary>The open file, for tests that ask the kernel how it is opened.</summary>
    internal SafeFileHandle Handle => _handle;

    public bool IsDirect => false;

    /// <summary>The sector alignment when unbuffered; 1 when buffered (the page cache takes any request).</summary>
    public int Alignment => Unbuffered ? _alignment : 1;

    /// <summary>Unbuffered requests (or their aligned middles) that went straight between the caller's memory and the file.</summary>
    internal long DirectIos => Interlocked.Read(ref _directIos);

    /// <summary>Unbuffered requests (or their unaligned ends) that went through a bounce buffer.</summary>
    internal long BouncedIos => Interlocked.Read(ref _bouncedIos);

    /// <summary>Bounce buffers allocated and not yet freed (pooled or in use).</summary>
    internal int LiveBounceBuffers => Volatile.Read(ref _liveBounceBuffers);

    /// <summary>True when I/O bypasses the page cache.</summary>
    public bool Unbuffered => BufferedReason is null;

    /// <summary>Why the device is buffered (asked to be, or the OS or file system refused); null when unbuffered.</summary>
    public string? BufferedReason { get; }

    public string Description => Unbuffered
        ? $"{Kind}: file {Path}, unbuffered (O_DIRECT), {_alignment}-byte alignment"
        : $"{Kind}: file {Path}, buffered ({BufferedReason})";

    public Span<byte> GetSpan(long offset, int length) => throw new NotSupportedException("file devices are not directly addressable");

    public void Write(long offset, ReadOnlySpan<byte> data)
    {
        CheckRange(offset, data.Length);
        try
        {
            if (!Unbuffered)
            {
                RandomAccess.Write(_handle, data, offset);
                return;
            }

            int head, middle;

            // Checked and used inside one fixed block: the address must not move in between.
            fixed (byte* p = data)
            {
                (head, middle) = DirectPart(offset, data.Length, p);
                if (middle > 0)
                {
                    RandomAccess.Write(_handle, new ReadOnlySpan<byte>(p + head, middle), offset + head);
                    Interlocked.Increment(ref _directIos);
                }
            }

            if (head > 0)
            {
                WriteThroughBounce(offset, data[..head]);
            }

            if (head + middle < data.Length)
            {
                WriteThroughBounce(offset + head + middle, data[(head + middle)..]);
            }
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
            if (!Unbuffered)
            {
                ReadFully(offset, destination);
                return;
            }

            int head, middle;
            fixed (byte* p = destination)
            {
                (head, middle) = DirectPart(offset, destination.Length, p);
                if (middle > 0)
                {
                    ReadFully(offset + head, new Span<byte>(p + head, middle));
                    Interlocked.Increment(ref _directIos);
                }
            }

            if (head > 0)
            {
                ReadThroughBounce(offset, destination[..head]);
            }

            if (head + middle < destination.Length)
            {
                ReadThroughBounce(offset + head + middle, destination[(head + middle)..]);
            }
        }
        catch (IOException ex)
        {
            throw new DeviceException($"{Kind} read of {destination.Length} bytes at {offset} failed: {ex.Message}", ex);
        }
    }

    private void ReadFully(long offset, Span<byte> destination)
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

    private void ReadThroughBounce(long offset, Span<byte> destination)
    {
        Interlocked.Increment(ref _bouncedIos);
        var bounce = RentBounce();
        try
        {
            var done = 0;
            while (done < destination.Length)
            {
                var position = offset + done;
                var start = AlignDown(position);
                var skip = (int)(position - start);
                var piece = Math.Min(destination.Length - done, _bounceSize - skip);
                var span = new Span<byte>((void*)bounce, (int)AlignUp(skip + piece));
                ReadFully(start, span);
                span.Slice(skip, piece).CopyTo(destination[done..]);
                done += piece;
            }
        }
        finally
        {
            ReturnBounce(bounce);
        }
    }

    private void WriteThroughBounce(long offset, ReadOnlySpan<byte> data)
    {
        Interlocked.Increment(ref _bouncedIos);
        var bounce = RentBounce();
        try
        {
            var done = 0;
            while (done < data.Length)
            {
                var position = offset + done;
                var start = AlignDown(position);
                var skip = (int)(position - start);
                var piece = Math.Min(data.Length - done, _bounceSize - skip);
                var length = (int)AlignUp(skip + piece);
                var span = new Span<byte>((void*)bounce, length);
                var headPartial = skip != 0;
                var tailPartial = skip + piece != length;
                if (!headPartial && !tailPartial)
                {
                    data.Slice(done, piece).CopyTo(span);
                    RandomAccess.Write(_handle, span, start);
                }
                else
                {
                    // Read-modify-write of the partial end sectors, with no lock: a writer of the same sector would be a
                    // writer of the same block (a sector never spans blocks, which BlockStore checks), and BlockStore's
                    // busy bit admits one writer per block. See the concurrency note on IBlockDevice.Write.
                    if (headPartial)
                    {
                        ReadFully(start, span[.._alignment]);
                    }

                    if (tailPartial && (length > _alignment || !headPartial))
                    {
                        ReadFully(start + length - _alignment, span[(length - _alignment)..]);
                    }

                    data.Slice(done, piece).CopyTo(span[skip..]);
                    RandomAccess.Write(_handle, span, start);
                }

                done += piece;
            }
        }
        finally
        {
            ReturnBounce(bounce);
        }
    }

    /// <summary>
    /// Splits a request into an unaligned head, a middle of whole sectors that can go straight to the file, and the
    /// rest. The middle is empty (and the head is everything) when the memory at its start is not aligned.
    /// </summary>
    private (int Head, int Middle) DirectPart(long offset, int length, byte* address)
    {
        var head = (int)Math.Min(AlignUp(offset) - offset, length);
        var middle = (int)AlignDown(length - head);
        return middle > 0 && ((nint)(address + head) & (_alignment - 1)) == 0 ? (head, middle) : (length, 0);
    }

    private long AlignDown(long value) => value & ~(long)(_alignment - 1);

    private long AlignUp(long value) => (value + _alignment - 1) & ~(long)(_alignment - 1);

    private IntPtr RentBounce()
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        if (_bounces.TryTake(out var buffer))
        {
            return buffer;
        }

        Interlocked.Increment(ref _liveBounceBuffers);
        return (IntPtr)NativeMemory.AlignedAlloc((nuint)_bounceSize, (nuint)_alignment);
    }

    private void FreeBounce(IntPtr buffer)
    {
        NativeMemory.AlignedFree((void*)buffer);
        Interlocked.Decrement(ref _liveBounceBuffers);
    }

    private void ReturnBounce(IntPtr buffer)
    {
        // Kept for reuse: at most one per concurrent request, which the device's queue depth bounds.
        if (_disposed)
        {
            FreeBounce(buffer);
        }
        else
        {
            _bounces.Add(buffer);

            // Dispose may have emptied the pool between the check and the add.
            if (_disposed && _bounces.TryTake(out var late))
            {
                FreeBounce(late);
            }
        }
    }

    /// <summary>Turns on O_DIRECT for the open file and proves it with one aligned write and read; returns why not, or null.</summary>
    private string? TryUnbuffered(bool refuse)
    {
        if (!OperatingSystem.IsLinux())
        {
            return "unbuffered I/O is implemented for Linux (O_DIRECT) only";
        }

        var direct = RuntimeInformation.ProcessArchitecture is Architecture.X64 or Architecture.X86 ? 0x4000 : 0x10000;
        var fd = (int)_handle.DangerousGetHandle();
        var flags = Native.fcntl(fd, Native.GetFlags, 0);
        if (flags < 0 || (refuse ? -1 : Native.fcntl(fd, Native.SetFlags, flags | direct)) < 0)
        {
            var errno = refuse ? 22 : Marshal.GetLastPInvokeError();
            return $"the file system of {System.IO.Path.GetDirectoryName(Path)} refused O_DIRECT (errno {errno})";
        }

        var probe = NativeMemory.AlignedAlloc((nuint)_alignment, (nuint)_alignment);
        try
        {
            var span = new Span<byte>(probe, _alignment);
            span.Clear();
            RandomAccess.Write(_handle, span, 0);
            _ = RandomAccess.Read(_handle, span, 0);
            return null;
        }
        catch (IOException ex)
        {
            _ = Native.fcntl(fd, Native.SetFlags, flags);
            return $"O_DIRECT I/O failed on {System.IO.Path.GetDirectoryName(Path)}: {ex.Message}";
        }
        finally
        {
            NativeMemory.AlignedFree(probe);
        }
    }

    /// <summary>
    /// Punches a hole (fallocate PUNCH_HOLE | KEEP_SIZE): the file keeps its size, its blocks under the range go back to
    /// the file system, and the range reads as zeros. False where the OS or file system cannot punch holes.
    /// </summary>
    public bool Discard(long offset, long length)
    {
        CheckRange(offset, length);
        if (length == 0)
        {
            return true;
        }

        if (!OperatingSystem.IsLinux() || Volatile.Read(ref _punchUnsupported))
        {
            return false;
        }

        if (Native.fallocate((int)_handle.DangerousGetHandle(), Native.PunchHole | Native.KeepSize, offset, length) != 0)
        {
            // EOPNOTSUPP: this file system keeps every block it ever wrote; say so once, by returning false from now on.
            Volatile.Write(ref _punchUnsupported, true);
            return false;
        }

        Interlocked.Add(ref _discarded, length);
        return true;
    }

    private bool _punchUnsupported;
    private long _discarded;

    /// <summary>Bytes handed back to the file system so far (<see cref="Discard"/>).</summary>
    public long DiscardedBytes => Interlocked.Read(ref _discarded);

    /// <summary>Bytes of disk the file takes now (statx's block count, which holes do not count); -1 where unknown.</summary>
    public long AllocatedBytes
    {
        get
        {
            if (!OperatingSystem.IsLinux())
            {
                return -1;
            }

            // statx's layout is the same on every architecture (unlike stat's): stx_blocks, in 512-byte units, at offset 48.
            Span<byte> buffer = stackalloc byte[256];
            return Native.statx((int)_handle.DangerousGetHandle(), string.Empty, Native.AtEmptyPath, Native.StatxBlocks, ref MemoryMarshal.GetReference(buffer)) == 0
                ? BitConverter.ToInt64(buffer[48..]) * 512
                : -1;
        }
    }

    private static bool IsNoSpace(IOException ex) => ex.HResult is 28 or unchecked((int)0x80070070) || ex.Message.Contains("space", StringComparison.OrdinalIgnoreCase);

    private void CheckRange(long offset, long length)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        if (offset < 0 || length < 0 || offset > Capacity - length)
        {
            throw new ArgumentOutOfRangeException(nameof(offset), $"range {offset}+{length} is outside the device (capacity {Capacity})");
        }
    }

    public void Dispose()
    {
        if (_disposed)
        {
            return;
        }

        _disposed = true;
        _handle.Dispose();
        while (_bounces.TryTake(out var buffer))
        {
            FreeBounce(buffer);
        }
    }

    private static class Native
    {
        public const int GetFlags = 3;
        public const int SetFlags = 4;

        public const int KeepSize = 0x01;
        public const int PunchHole = 0x02;
        public const int AtEmptyPath = 0x1000;
        public const uint StatxBlocks = 0x400;

        [DllImport("libc", SetLastError = true)]
        public static extern int fcntl(int fd, int command, int argument);

        [DllImport("libc", SetLastError = true)]
        public static extern int fallocate(int fd, int mode, long offset, long length);

        [DllImport("libc", SetLastError = true)]
        public static extern int statx(int directoryFd, [MarshalAs(UnmanagedType.LPUTF8Str)] string path, int flags, uint mask, ref byte buffer);
    }
}
