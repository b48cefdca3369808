namespace Pocket.Networking;

/// <summary>Serves the frames of one server role. Called on the connection's own thread.</summary>
public interface IFrameHandler
{
    /// <summary>Handles one request. The body is read through <paramref name="frame"/>; whatever is left unread is discarded.</summary>
    void Handle(FrameContext frame);

    /// <summary>Called once when a connection ends, on its thread, for cleanup of per-connection state.</summary>
    void OnDisconnected(FrameContext connection);

    /// <summary>
    /// True while the connection holds state its peer will come back for (an open write): such a connection is
    /// not closed as idle. Asked off the connection's thread, only of connections already idle for the timeout.
    /// </summary>
    bool HoldsState(FrameContext connection) => false;
}
