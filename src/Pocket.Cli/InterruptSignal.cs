using System.Runtime.InteropServices;

namespace Pocket.Cli;

/// <summary>
/// A background job of a non-interactive shell (`pocket up &amp;` in a script) starts with SIGINT ignored, and .NET
/// keeps an ignored SIGINT ignored: Ctrl-C and `kill -INT` would do nothing and only SIGTERM would stop the command.
/// Every `pocket` command stops on INT as it does on TERM, so the disposition goes back to the default before .NET
/// installs its handlers (they cancel the running command; see Program.cs).
/// </summary>
internal static partial class InterruptSignal
{
    private const int SigInt = 2; // the same number on Linux and macOS
    private const nint SigDfl = 0;

    /// <summary>Restores SIGINT's default disposition; call first thing, before anything touches the console.</summary>
    public static void Restore()
    {
        if (OperatingSystem.IsLinux() || OperatingSystem.IsMacOS())
        {
            // SIG_ERR only for a bad signal number; there is nothing to do about it but carry on as before.
            _ = Signal(SigInt, SigDfl);
        }
    }

    [LibraryImport("libc", EntryPoint = "signal")]
    private static partial nint Signal(int signal, nint handler);
}
