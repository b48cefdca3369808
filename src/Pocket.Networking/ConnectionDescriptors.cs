namespace Pocket.Networking;

/// <summary>
/// The file descriptors the process's accepted connections may hold together, over all its frame servers (an embedded
/// cluster runs several in one process). A .NET process out of descriptors cannot start a thread: the runtime needs a
/// pipe for it, takes the failure for out-of-memory and aborts the process (seen with a metadata server given more
/// connects than its open-file limit: "Out of memory.", SIGABRT, in 4 of 6 tries). So connections never take the last
/// descriptors: past the budget a connect is closed as it comes, and the process keeps <see cref="Headroom"/> for
/// threads, files and outgoing connections.
/// </summary>
internal static class ConnectionDescriptors
{
    /// <summary>Descriptors kept for everything but accepted connections, above those open when the budget is set.</summary>
    internal const int Headroom = 64;

    private static readonly Lazy<Limits> Measured = new(Measure);
    private static int _held;

    /// <summary>The process's open-file limit after raising the soft limit to the hard one (null when unknown).</summary>
    public static long? FileLimit => Measured.Value.FileLimit;

    /// <summary>
    /// How many connections the process may hold: the open-file limit less the descriptors open when the first server
    /// started and <see cref="Headroom"/> (int.MaxValue when the limit is unknown).
    /// </summary>
    public static int Budget => Measured.Value.Budget;

    /// <summary>Takes one descriptor for a new connection; false (nothing taken) when the budget is spent.</summary>
    public static bool TryTake()
    {
        if (Interlocked.Increment(ref _held) <= Budget)
        {
            return true;
        }

        Interlocked.Decrement(ref _held);
        return false;
    }

    /// <summary>Gives back the descriptor of a connection that closed (once per successful <see cref="TryTake"/>).</summary>
    public static void Return() => Interlocked.Decrement(ref _held);

    private static Limits Measure()
    {
        var limit = Linux.RaiseFileLimit();
        if (limit is not { } known)
        {
            return new Limits(null, int.MaxValue);
        }

        var budget = known - Linux.OpenDescriptors() - Headroom;
        return new Limits(limit, (int)Math.Clamp(budget, 1, int.MaxValue));
    }

    private sealed record Limits(long? FileLimit, int Budget);
}
