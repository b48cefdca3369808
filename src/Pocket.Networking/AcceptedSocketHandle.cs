using Microsoft.Win32.SafeHandles;

namespace Pocket.Networking;

/// <summary>
/// The descriptor of a plain connection a frame server accepted, closed with close(2) when released: an orderly end
/// (the peer reads the end of the stream), where a <see cref="System.Net.Sockets.SafeSocketHandle"/> released without
/// its <see cref="System.Net.Sockets.Socket"/> may reset the connection. The loops need no <c>Socket</c> for a plain
/// connection: wrapping the descriptor in one cost eight system calls per accept (fstat, four getsockopt, fcntl,
/// getsockname, getpeername) before its first request was read.
/// </summary>
internal sealed class AcceptedSocketHandle : SafeHandleMinusOneIsInvalid
{
    public AcceptedSocketHandle(int fd)
        : base(ownsHandle: true)
    {
        SetHandle(fd);
    }

    public int Fd => (int)handle;

    protected override bool ReleaseHandle()
    {
        Linux.Close((int)handle);
        return true;
    }
}
