using System.Buffers.Binary;
using System.Net;
using System.Runtime.InteropServices;

namespace Pocket.Networking;

/// <summary>The few Linux calls the event loops need (epoll, eventfd, the file limit); Linux is the only target.</summary>
internal static unsafe partial class Linux
{
    public const uint EpollIn = 0x001;
    public const uint EpollOut = 0x004;
    public const uint EpollErr = 0x008;
    public const uint EpollHup = 0x010;
    public const uint EpollRdHup = 0x2000;
    public const uint EpollOneShot = 1u << 30;
    public const uint EpollEt = 1u << 31;
    public const int EpollCtlAdd = 1;
    public const int EpollCtlDel = 2;
    public const int EpollCtlMod = 3;
    private const int EpollCloexec = 0x80000;
    private const int EfdNonblock = 0x800;
    private const int EfdCloexec = 0x80000;
    private const int RlimitNofile = 7;
    private const int Eintr = 4;
    private const int Eagain = 11;
    private const int Ebadf = 9;
    private const int Epipe = 32;
    private const int Econnaborted = 103;
    private const int Econnreset = 104;
    private const int Enotconn = 107;
    private const int Etimedout = 110;
    public const int Emfile = 24;
    public const int Enfile = 23;
    public const int Enobufs = 105;
    public const int Enomem = 12;
    private const int MsgDontWait = 0x40;
    private const int SockNonblock = 0x800;
    private const int SockCloexec = 0x80000;
    private const int MsgNoSignal = 0x4000;
    private const int SockaddrStorage = 128;
    private const ushort AfInet = 2;
    private const ushort AfInet6 = 10;
    private const int IpProtoTcp = 6;
    private const int TcpNoDelay = 1;

    /// <summary>struct epoll_event is packed on x86-64 (12 bytes) and naturally aligned elsewhere (16).</summary>
    public static readonly int EventSize = RuntimeInformation.ProcessArchitecture == Architecture.X64 ? 12 : 16;

    private static readonly int DataOffset = EventSize == 12 ? 4 : 8;

    [LibraryImport("libc", EntryPoint = "epoll_create1", SetLastError = true)]
    private static partial int EpollCreate1(int flags);

    [LibraryImport("libc", EntryPoint = "epoll_ctl", SetLastError = true)]
    private static partial int EpollCtlRaw(int epfd, int op, int fd, byte* ev);

    [LibraryImport("libc", EntryPoint = "epoll_wait", SetLastError = true)]
    private static partial int EpollWaitRaw(int epfd, byte* events, int maxEvents, int timeout);

    [LibraryImport("libc", EntryPoint = "eventfd", SetLastError = true)]
    private static partial int EventFd(uint initval, int flags);

    [LibraryImport("libc", EntryPoint = "write", SetLastError = true)]
    private static partial nint Write(int fd, byte* buffer, nint count);

    [LibraryImport("libc", EntryPoint = "recv", SetLastError = true)]
    private static partial nint RecvRaw(nint fd, byte* buffer, nint length, int flags);

    [LibraryImport("libc", EntryPoint = "send", SetLastError = true)]
    private static partial nint SendRaw(nint fd, byte* buffer, nint length, int flags);

    [LibraryImport("libc", EntryPoint = "sendmsg", SetLastError = true)]
    private static partial nint SendMsgRaw(nint fd, MessageHeader* message, int flags);

    [LibraryImport("libc", EntryPoint = "accept4", SetLastError = true)]
    private static partial int Accept4(nint fd, byte* address, int* addressLength, int flags);

    [LibraryImport("libc", EntryPoint = "close", SetLastError = true)]
    public static partial int Close(int fd);

    [LibraryImport("libc", EntryPoint = "setsockopt", SetLastError = true)]
    private static partial int SetSockOpt(nint fd, int level, int name, int* value, int length);

    [LibraryImport("libc", EntryPoint = "shutdown", SetLastError = true)]
    private static partial int ShutdownRaw(nint fd, int how);

    [LibraryImport("libc", EntryPoint = "getrlimit", SetLastError = true)]
    private static partial int GetRlimit(int resource, ulong* limits);

    [LibraryImport("libc", EntryPoint = "setrlimit", SetLastError = true)]
    private static partial int SetRlimit(int resource, ulong* limits);

    public static int CreateEpoll()
    {
        var fd = EpollCreate1(EpollCloexec);
        return fd >= 0 ? fd : throw new IOException($"epoll_create1 failed: errno {Marshal.GetLastPInvokeError()}");
    }

    public static int CreateEventFd()
    {
        var fd = EventFd(0, EfdNonblock | EfdCloexec);
        return fd >= 0 ? fd : throw new IOException($"eventfd failed: errno {Marshal.GetLastPInvokeError()}");
    }

    public static void Signal(int eventFd)
    {
        ulong one = 1;
        Write(eventFd, (byte*)&one, 8);
    }

    /// <summary>Adds, changes or removes interest; false when the descriptor is gone (closed meanwhile).</summary>
    public static bool EpollCtl(int epfd, int op, int fd, uint events, ulong data)
    {
        var ev = stackalloc byte[16];
        *(uint*)ev = events;
        *(ulong*)(ev + DataOffset) = data;
        return EpollCtlRaw(epfd, op, fd, ev) == 0;
    }

    /// <summary>Waits for events into <paramref name="events"/> (pinned, <see cref="EventSize"/> bytes each); 0 on EINTR.</summary>
    public static int EpollWait(int epfd, byte* events, int maxEvents, int timeout)
    {
        var n = EpollWaitRaw(epfd, events, maxEvents, timeout);
        if (n < 0)
        {
            var errno = Marshal.GetLastPInvokeError();
            return errno == Eintr ? 0 : throw new IOException($"epoll_wait failed: errno {errno}");
        }

        return n;
    }

    /// <summary>
    /// Reads what has arrived without waiting (MSG_DONTWAIT, whatever the socket's blocking mode, so its writes may
    /// still block): the count read, 0 at the end of the stream, or -1 when nothing is there yet. The socket's handle
    /// is held around the call, so that its descriptor cannot be closed, and its number reused, under it; a socket
    /// already closed throws <see cref="ObjectDisposedException"/>, which each caller turns into its own error.
    /// </summary>
    public static int ReceiveNow(SafeHandle socket, Span<byte> destination)
    {
        var added = false;
        try
        {
            socket.DangerousAddRef(ref added);
            return ReceiveNow(socket.DangerousGetHandle(), destination);
        }
        finally
        {
            if (added)
            {
                socket.DangerousRelease();
            }
        }
    }

    /// <summary>
    /// Reads what has arrived on a non-blocking socket that the calling thread owns (an event loop's connection: only
    /// its owner reads, writes or closes it, so its descriptor cannot be closed under the call): the count read, 0 at
    /// the end of the stream, or -1 with <paramref name="errno"/> (EAGAIN when nothing is there yet). No handle
    /// reference count and no socket wrapper per call: a 1 KiB get spent ~4 % of the metadata server's CPU in them.
    /// </summary>
    public static int ReceiveOwned(int fd, Span<byte> destination, out int errno)
    {
        fixed (byte* p = destination)
        {
            nint n;
            while (Interrupted(n = RecvRaw(fd, p, destination.Length, 0), out errno))
            {
            }

            return (int)n;
        }
    }

    /// <summary>
    /// Writes what a non-blocking socket that the calling thread owns takes now (see <see cref="ReceiveOwned"/>): the
    /// count written, or -1 with <paramref name="errno"/> (EAGAIN when it takes nothing now). MSG_NOSIGNAL: a peer gone
    /// is an error (EPIPE), not a signal.
    /// </summary>
    public static int SendOwned(int fd, ReadOnlySpan<byte> source, out int errno)
    {
        fixed (byte* p = source)
        {
            nint n;
            while (Interrupted(n = SendRaw(fd, p, source.Length, MsgNoSignal), out errno))
            {
            }

            return (int)n;
        }
    }

    /// <summary>The socket error an errno from <see cref="ReceiveOwned"/> or <see cref="SendOwned"/> stands for (as the runtime maps it).</summary>
    public static System.Net.Sockets.SocketError SocketErrorOf(int errno) => errno switch
    {
        Eagain => System.Net.Sockets.SocketError.WouldBlock,
        Epipe => System.Net.Sockets.SocketError.Shutdown,
        Econnreset => System.Net.Sockets.SocketError.ConnectionReset,
        Econnaborted => System.Net.Sockets.SocketError.ConnectionAborted,
        Etimedout => System.Net.Sockets.SocketError.TimedOut,
        Enotconn => System.Net.Sockets.SocketError.NotConnected,
        Ebadf => System.Net.Sockets.SocketError.OperationAborted,
        Enobufs => System.Net.Sockets.SocketError.NoBufferSpaceAvailable,
        _ => System.Net.Sockets.SocketError.SocketError,
    };

    /// <summary>
    /// Takes one connection from a non-blocking listener's queue (accept4, the new socket close-on-exec and
    /// non-blocking): its descriptor, or -1 with <paramref name="errno"/> (EAGAIN when the queue is empty), and the
    /// peer's address, which accept4 reports with it (no getpeername). Held like
    /// <see cref="ReceiveNow(SafeHandle, Span{byte})"/>; a listener already closed throws <see cref="ObjectDisposedException"/>.
    /// </summary>
    public static int AcceptNow(SafeHandle listener, out int errno, out IPEndPoint? remote)
    {
        var added = false;
        try
        {
            listener.DangerousAddRef(ref added);
            var fd = listener.DangerousGetHandle();
            var address = stackalloc byte[SockaddrStorage];
            int length;
            int accepted;
            do
            {
                length = SockaddrStorage;
            }
            while (Interrupted(accepted = Accept4(fd, address, &length, SockNonblock | SockCloexec), out errno));

            remote = accepted >= 0 ? EndPointOf(new ReadOnlySpan<byte>(address, Math.Min(length, SockaddrStorage))) : null;
            return accepted;
        }
        finally
        {
            if (added)
            {
                listener.DangerousRelease();
            }
        }
    }

    /// <summary>An IPv4 or IPv6 socket address (struct sockaddr_in / sockaddr_in6), or null for any other family.</summary>
    internal static IPEndPoint? EndPointOf(ReadOnlySpan<byte> address)
    {
        if (address.Length < 2)
        {
            return null;
        }

        var family = BitConverter.ToUInt16(address);
        if (family == AfInet && address.Length >= 8)
        {
            return new IPEndPoint(new IPAddress(address.Slice(4, 4)), BinaryPrimitives.ReadUInt16BigEndian(address[2..]));
        }

        if (family == AfInet6 && address.Length >= 28)
        {
            var scope = BitConverter.ToUInt32(address[24..]);
            return new IPEndPoint(new IPAddress(address.Slice(8, 16), scope), BinaryPrimitives.ReadUInt16BigEndian(address[2..]));
        }

        return null;
    }

    /// <summary>Sets TCP_NODELAY on a socket the caller holds open; false (errno in <paramref name="errno"/>) when refused.</summary>
    public static bool SetNoDelay(SafeHandle socket, out int errno)
    {
        var added = false;
        try
        {
            socket.DangerousAddRef(ref added);
            var on = 1;
            var result = SetSockOpt(socket.DangerousGetHandle(), IpProtoTcp, TcpNoDelay, &on, sizeof(int));
            errno = result == 0 ? 0 : Marshal.GetLastPInvokeError();
            return result == 0;
        }
        finally
        {
            if (added)
            {
                socket.DangerousRelease();
            }
        }
    }

    /// <summary>
    /// Shuts down one or both directions of a socket (<see cref="System.Net.Sockets.SocketShutdown"/>); a socket already
    /// closed throws <see cref="ObjectDisposedException"/>, one no longer connected is left as it is.
    /// </summary>
    public static void Shutdown(SafeHandle socket, System.Net.Sockets.SocketShutdown how)
    {
        var added = false;
        try
        {
            socket.DangerousAddRef(ref added);
            ShutdownRaw(socket.DangerousGetHandle(), (int)how);
        }
        finally
        {
            if (added)
            {
                socket.DangerousRelease();
            }
        }
    }

    /// <summary>
    /// Arms (or re-arms) a one-shot registration of <paramref name="fd"/> while <paramref name="owner"/> holds it
    /// open, so that the number cannot be another descriptor's by then; false when it is closed or epoll refused.
    /// </summary>
    public static bool EpollArm(int epfd, SafeHandle owner, int op, uint events, ulong data)
    {
        var added = false;
        try
        {
            owner.DangerousAddRef(ref added);
            return EpollCtl(epfd, op, (int)owner.DangerousGetHandle(), events, data);
        }
        catch (ObjectDisposedException)
        {
            return false;
        }
        finally
        {
            if (added)
            {
                owner.DangerousRelease();
            }
        }
    }

    /// <summary>
    /// What a non-blocking call's return means: true with the count it moved, or -1 when it would block; false when a
    /// signal interrupted it (call it again); an <see cref="IOException"/> for any other error.
    /// </summary>
    private static bool Finished(nint result, string call, out int count)
    {
        if (Interrupted(result, out var errno))
        {
            count = 0;
            return false;
        }

        if (result >= 0)
        {
            count = (int)result;
            return true;
        }

        if (errno == Eagain)
        {
            count = -1;
            return true;
        }

        throw new IOException($"{call} failed: errno {errno}");
    }

    /// <summary>
    /// True when a signal interrupted the call (call it again); else false with <paramref name="errno"/>: 0 when it
    /// succeeded (<paramref name="result"/> >= 0), its error otherwise.
    /// </summary>
    private static bool Interrupted(nint result, out int errno)
    {
        errno = result >= 0 ? 0 : Marshal.GetLastPInvokeError();
        return errno == Eintr;
    }

    private static int ReceiveNow(nint fd, Span<byte> destination)
    {
        fixed (byte* p = destination)
        {
            int count;
            while (!Finished(RecvRaw(fd, p, destination.Length, MsgDontWait), "recv", out count))
            {
            }

            return count;
        }
    }

    /// <summary>
    /// Writes <paramref name="first"/> then <paramref name="second"/> with one gathered system call (sendmsg), without
    /// waiting (MSG_DONTWAIT, whatever the socket's blocking mode): the count written (possibly short of both), or -1
    /// when the socket takes nothing now. A frame's head and a large body leave together, so the peer is woken once for
    /// the whole frame rather than once for the head and again for the body. Held like <see cref="ReceiveNow(SafeHandle, Span{byte})"/>.
    /// </summary>
    public static int SendNow(SafeHandle socket, ReadOnlySpan<byte> first, ReadOnlySpan<byte> second)
    {
        var added = false;
        try
        {
            socket.DangerousAddRef(ref added);
            var fd = socket.DangerousGetHandle();
            fixed (byte* a = first)
            fixed (byte* b = second)
            {
                var vectors = stackalloc IoVector[2];
                vectors[0] = new IoVector { Base = a, Length = first.Length };
                vectors[1] = new IoVector { Base = b, Length = second.Length };
                var message = new MessageHeader { Vectors = vectors, VectorCount = 2 };
                int count;
                while (!Finished(SendMsgRaw(fd, &message, MsgDontWait | MsgNoSignal), "sendmsg", out count))
                {
                }

                return count;
            }
        }
        finally
        {
            if (added)
            {
                socket.DangerousRelease();
            }
        }
    }

    private struct IoVector
    {
        public byte* Base;
        public nint Length;
    }

    /// <summary>struct msghdr (LP64): no address, no control data.</summary>
    private struct MessageHeader
    {
        public nint Name;
        public int NameLength;
        public IoVector* Vectors;
        public nint VectorCount;
        public nint Control;
        public nint ControlLength;
        public int Flags;
    }

    public static ulong EventData(byte* events, int i) => *(ulong*)(events + (i * EventSize) + DataOffset);

    /// <summary>
    /// True when the event says the peer closed (or the socket failed). Edge-triggered, the end of the stream raises no
    /// event of its own when it arrived with the last data: a reader that stops at a short read must read on to it.
    /// </summary>
    public static bool HungUp(byte* events, int i) => (*(uint*)(events + (i * EventSize)) & (EpollRdHup | EpollHup | EpollErr)) != 0;

    /// <summary>
    /// How many file descriptors the process has open now (0 when /proc does not say). Read with readdir, not
    /// Directory.EnumerateFileSystemEntries: a client process asks on its first connect (the budget counts outgoing
    /// connections), and in a fresh process here (load 11-13) the managed enumeration's first call took 8-35 ms against
    /// 4-11 ms (most of it loading libc, which the connection's epoll set needs next anyway), later calls 270-380 us
    /// against 23-60 us.
    /// </summary>
    public static int OpenDescriptors()
    {
        try
        {
            var directory = OpenDir("/proc/self/fd");
            if (directory == 0)
            {
                return 0;
            }

            var count = 0;
            for (byte* entry; (entry = ReadDir(directory)) != null;)
            {
                // struct dirent (LP64): d_ino, d_off, d_reclen, d_type, then d_name; "." and ".." are not descriptors.
                if (entry[DirentNameOffset] != (byte)'.')
                {
                    count++;
                }
            }

            _ = CloseDir(directory);

            // Less the directory's own descriptor, open while it was read.
            return Math.Max(count - 1, 0);
        }
        catch (Exception ex) when (ex is DllNotFoundException or EntryPointNotFoundException)
        {
            return 0;
        }
    }

    private const int DirentNameOffset = 19;

    [LibraryImport("libc", EntryPoint = "opendir", StringMarshalling = StringMarshalling.Utf8)]
    private static partial nint OpenDir(string path);

    [LibraryImport("libc", EntryPoint = "readdir")]
    private static partial byte* ReadDir(nint directory);

    [LibraryImport("libc", EntryPoint = "closedir")]
    private static partial int CloseDir(nint directory);

    /// <summary>Raises the soft open-file limit to the hard one; returns the limit now in force (or null when unknown).</summary>
    public static long? RaiseFileLimit()
    {
        try
        {
            var limits = stackalloc ulong[2];
            if (GetRlimit(RlimitNofile, limits) != 0)
            {
                return null;
            }

            if (limits[0] < limits[1])
            {
                var soft = limits[0];
                limits[0] = limits[1];
                if (SetRlimit(RlimitNofile, limits) != 0)
                {
                    return (long)Math.Min(soft, long.MaxValue);
                }
            }

            return (long)Math.Min(limits[0], long.MaxValue);
        }
        catch (Exception ex) when (ex is DllNotFoundException or EntryPointNotFoundException)
        {
            return null;
        }
    }
}
