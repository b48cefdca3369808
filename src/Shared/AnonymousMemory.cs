using System.Runtime.InteropServices;

namespace Pocket;

/// <summary>
/// The system calls over anonymous memory mappings, and their constants, written once for every assembly that maps
/// memory of its own: the DRAM tier's device (Pocket.Storage) and the metadata server's inline slots
/// (Pocket.Metadata). The file is compiled into each of them rather than referenced from one: the storage engine
/// references no Pocket assembly, and the metadata server does not reference the storage engine
/// (docs/architecture.md, "Assemblies and the rules between them").
/// </summary>
internal static unsafe class AnonymousMemory
{
    public const int ProtRead = 1;
    public const int ProtWrite = 2;
    public const int MapPrivate = 0x02;
    public const int MapAnonymous = 0x20;
    public const int MapNoReserve = 0x4000;
    public const int MadvDontNeed = 4;
    public const int MadvHugePage = 14;
    public const int MadvPopulateWrite = 23;
    public static readonly IntPtr MapFailed = new(-1);

    /// <summary>
    /// Maps <paramref name="bytes"/> of private, zero-filled memory with no swap reserved for it (pages are taken as
    /// they are first touched); <see cref="MapFailed"/>, with the errno, when the kernel refuses.
    /// </summary>
    public static IntPtr MapUnreserved(nuint bytes) =>
        mmap(IntPtr.Zero, bytes, ProtRead | ProtWrite, MapPrivate | MapAnonymous | MapNoReserve, -1, 0);

    [DllImport("libc", SetLastError = true)]
    public static extern IntPtr mmap(IntPtr addr, nuint length, int prot, int flags, int fd, long offset);

    [DllImport("libc", SetLastError = true)]
    public static extern int munmap(IntPtr addr, nuint length);

    [DllImport("libc", SetLastError = true)]
    public static extern int madvise(IntPtr addr, nuint length, int advice);

    [DllImport("libc", SetLastError = true)]
    public static extern int mincore(IntPtr addr, nuint length, byte* vector);
}
