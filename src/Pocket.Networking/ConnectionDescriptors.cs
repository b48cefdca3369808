using System.Net;
using System.Net.Sockets;

namespace Pocket.Networking;

/// <summary>
/// The file descriptors the process's connections may hold together, accepted and outgoing, over all its frame servers
/// and client connections (an embedded cluster runs several servers in one process, and its nodes connect to its
/// metadata server; a gateway or a benchmark opens thousands of client connections). A .NET process out of descriptors
/// cannot start a thread: the runtime needs a pipe for it, takes the failure for out-of-memory and aborts the process
/// (seen with a metadata server given more connects than its open-file limit: "Out of memory.", SIGABRT, in 4 of 6
/// tries), and it cannot load an assembly either (a benchmark whose own cluster and clients ran out failed that way).
/// So connections never take the last descriptors: past the budget an accepted connect is closed as it comes, an
/// outgoing connect fails with <see cref="ConnectionLostException"/> before it makes a socket, and the process keeps
/// <see cref="Headroom"/> for threads, files and the servers' own listeners and epoll sets.
/// </summary>
internal static class ConnectionDescriptors
{
    /// <summary>Descriptors kept for everything but connections, above those open when the budget is set.</summary>
    internal const int Headroom = 64;

    /// <summary>
    /// Descriptors of the budget that accepted connections leave to outgoing ones (at most half of it): a storage node
    /// whose clients took everything else can still reach its metadata servers and its peers.
    /// </summary>
    internal const int OutgoingReserve = 32;

    private static readonly Lock RefreshLock = new();
    private static Limits? _measured;
    private static int _held;

    private static Limits Measured => Volatile.Read(ref _measured) ?? Refresh();

    /// <summary>The process's open-file limit after raising the soft limit to the hard one (null when unknown).</summary>
    public static long? FileLimit => Measured.FileLimit;

    /// <summary>
    /// How many connections, accepted and outgoing together, the process may hold: the open-file limit less the
    /// descriptors other than connections open when it was last measured (<see cref="Refresh"/>) and <see cref="Headroom"/>
    /// (int.MaxValue when the limit is unknown). Outgoing connections may take all of it.
    /// </summary>
    public static int Budget => Measured.Budget;

    /// <summary>How many of <see cref="Budget"/> accepted connections may hold: all but <see cref="OutgoingReserve"/>.</summary>
    public static int AcceptBudget => Measured.AcceptBudget;

    /// <summary>Takes one descriptor for an accepted connection; false (nothing taken) when <see cref="AcceptBudget"/> is spent.</summary>
    public static bool TryTake() => TryTake(AcceptBudget);

    /// <summary>Takes one descriptor for an outgoing connection; false (nothing taken) when <see cref="Budget"/> is spent.</summary>
    public static bool TryTakeOutgoing() => TryTake(Budget);

    /// <summary>
    /// Takes a descriptor for an outgoing connection to <paramref name="host"/> and makes its socket (TCP_NODELAY,
    /// blocking); null, with nothing taken, when <see cref="Budget"/> is spent. Whoever holds the socket gives the
    /// descriptor back (<see cref="Return"/>) once it is closed.
    /// </summary>
    /// <remarks>
    /// An IPv4 address gets an IPv4 socket. The runtime's family-less constructor makes a dual-mode IPv6 socket, which
    /// costs two more setsockopt calls (IPV6_V6ONLY, set twice) on every connect and takes the IPv4 address as a mapped
    /// IPv6 one: a function's cold start pays that on each connection it opens. A name or an IPv6 address keeps the
    /// dual-mode socket, which reaches either family.
    /// </remarks>
    public static Socket? TryOpenOutgoing(string host)
    {
        if (!TryTakeOutgoing())
        {
            return null;
        }

        try
        {
            var socket = IPAddress.TryParse(host, out var address) && address.AddressFamily == AddressFamily.InterNetwork
                ? new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp)
                : new Socket(SocketType.Stream, ProtocolType.Tcp);
            socket.NoDelay = true;
            return socket;
        }
        catch
        {
            Return();
            throw;
        }
    }

    /// <summary>Gives back the descriptor of a connection that closed (once per successful take).</summary>
    public static void Return() => Interlocked.Decrement(ref _held);

    /// <summary>What an outgoing connect refused for want of descriptors says (after "cannot connect to HOST:PORT: ").</summary>
    internal static string OutgoingRefusal() =>
        $"the process's connections hold all {Budget} descriptors its open-file limit ({FileLimit}) leaves them " +
        "(raise the hard open-file limit, or hold fewer connections)";

    private static bool TryTake(int limit)
    {
        if (Interlocked.Increment(ref _held) <= limit)
        {
            return true;
        }

        Interlocked.Decrement(ref _held);
        return false;
    }

    /// <summary>
    /// Measures the budget again: the open-file limit less <see cref="Headroom"/> and the descriptors open now that are
    /// not connections. Each server (and each HTTP listener that shares the budget) calls it as it starts, so a process
    /// that opens more after its first server (an in-process `pocket up`: the nodes', the controller's and the gateway's
    /// listeners, epoll sets and files) does not keep a budget that counts descriptors it no longer has.
    /// </summary>
    public static Limits Refresh()
    {
        lock (RefreshLock)
        {
            var limits = Measure();
            Volatile.Write(ref _measured, limits);
            return limits;
        }
    }

    private static Limits Measure()
    {
        var limit = Linux.RaiseFileLimit();
        if (limit is not { } known)
        {
            return new Limits(null, int.MaxValue, int.MaxValue);
        }

        // Connections open now are in the budget, not beside it.
        var others = Linux.OpenDescriptors() - Volatile.Read(ref _held);
        var budget = (int)Math.Clamp(known - others - Headroom, 1, int.MaxValue);
        return new Limits(limit, budget, Math.Max(budget - OutgoingReserve, (budget + 1) / 2));
    }

    internal sealed record Limits(long? FileLimit, int Budget, int AcceptBudget);
}
