using StackExchange.Redis;

namespace Pocket.LoadGenerator;

/// <summary>
/// An expected failure of a benchmark or sort run (a peer that cannot be reached, a wrong read): the CLI prints its
/// message as one line and exits 1, without a stack trace.
/// </summary>
internal sealed class LoadGeneratorException(string message, Exception? inner = null) : Exception(message, inner)
{
    /// <summary>
    /// True for the failures a run expects and reports as one line: its own, and the RESP client's (a peer that went
    /// away mid-run), so callers need not know the RESP client's types.
    /// </summary>
    public static bool IsExpected(Exception ex) => ex is LoadGeneratorException or RedisException;
}
