using Pocket.Protocol;

namespace Pocket.Networking;

/// <summary>How the rest of a request body is received once the handler has admitted the frame.</summary>
[Flags]
public enum FrameAdmission
{
    /// <summary>Read the whole body into the connection's buffer, then call <see cref="IFrameHandler.Handle"/>.</summary>
    Buffer = 0,

    /// <summary>Read the rest of the body straight into <see cref="IFrameHandler.BodyDestination"/> (e.g. node memory).</summary>
    Direct = 1,

    /// <summary>The handler blocks (device I/O): run it on the server's bounded I/O pool, not on an event loop.</summary>
    Blocking = 2,
}

/// <summary>
/// Serves the frames of one server role. Connections (plain and TLS) are served by a few event-loop threads that
/// read, parse and handle frames inline, so a handler must not block unless it admitted the frame as
/// <see cref="FrameAdmission.Blocking"/>. Calls for one connection never overlap.
/// </summary>
public interface IFrameHandler
{
    /// <summary>
    /// Handles one request, once its body is in (buffered, or placed by <see cref="BodyDestination"/>). The body is
    /// read through <paramref name="frame"/>; whatever is left unread is discarded.
    /// </summary>
    void Handle(FrameContext frame);

    /// <summary>Called once when a connection ends, for cleanup of per-connection state.</summary>
    void OnDisconnected(FrameContext connection);

    /// <summary>
    /// True while the connection holds state its peer will come back for (an open write): such a connection is
    /// not closed as idle. Asked off the connection's thread, only of connections already idle for the timeout.
    /// </summary>
    bool HoldsState(FrameContext connection) => false;

    /// <summary>
    /// How many leading body bytes <see cref="Admit"/> needs (at most <see cref="FrameContext.MaxPrefix"/>), or -1
    /// when the frame needs no admission. Frames whose body is larger than <see cref="FrameContext.InlineBody"/> are
    /// admitted anyway (with no prefix unless one is asked for): nothing beyond that is buffered unchecked.
    /// </summary>
    int PrefixLength(in FrameHeader header) => -1;

    /// <summary>
    /// Decides, from the header and the prefix (read with <see cref="FrameContext.ReadBodyInto"/>), what happens to the
    /// rest of the body before any more of it is read. To refuse, reply: <see cref="FrameContext.Refuse"/> answers and
    /// closes the connection (unauthorised), <see cref="FrameContext.ReplyError"/> answers and skips the body unread.
    /// </summary>
    FrameAdmission Admit(FrameContext frame) => FrameAdmission.Buffer;

    /// <summary>
    /// With <see cref="FrameAdmission.Direct"/>: where the body bytes go from <paramref name="received"/> bytes after
    /// what <see cref="Admit"/> consumed; any length from 1 to what remains. Called again after each piece arrives.
    /// </summary>
    Span<byte> BodyDestination(FrameContext frame, int received) => throw new NotSupportedException("this handler takes no direct bodies");

    /// <summary>After <see cref="FrameAdmission.Direct"/>: the connection ended before the body was complete (instead of Handle).</summary>
    void Abandon(FrameContext frame)
    {
    }
}
