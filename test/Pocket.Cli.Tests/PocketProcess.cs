using System.Diagnostics;
using System.Runtime.InteropServices;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using System.Text.RegularExpressions;
using System.Threading.Channels;

namespace Pocket.Cli.Tests;

/// <summary>What a finished `pocket` run printed.</summary>
internal sealed record PocketResult(int ExitCode, string Stdout, string Stderr)
{
    public JsonNode Json() => JsonNode.Parse(Stdout) ?? throw new InvalidOperationException($"no JSON in: {Stdout}");

    public override string ToString() => $"exit {ExitCode}\nstdout:\n{Stdout}\nstderr:\n{Stderr}";
}

/// <summary>
/// Runs the built `pocket` executable as a user would, each test with its own POCKET_HOME and none of the caller's
/// POCKET_* variables. Every wait is bounded; a run that overstays is killed with its children.
/// </summary>
internal static partial class PocketProcess
{
    public static readonly TimeSpan Timeout = TimeSpan.FromSeconds(120);

    /// <summary>The executable and the arguments that come before the command's own.</summary>
    public static readonly (string File, string[] Prefix) Program = Locate();

    public static ProcessStartInfo StartInfo(string home, IEnumerable<string> arguments)
    {
        var start = new ProcessStartInfo(Program.File)
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            RedirectStandardInput = true,
            UseShellExecute = false,
            StandardOutputEncoding = Encoding.UTF8,
        };
        foreach (var argument in Program.Prefix.Concat(arguments))
        {
            start.ArgumentList.Add(argument);
        }

        foreach (var name in start.Environment.Keys.Where(k => k.StartsWith("POCKET_", StringComparison.Ordinal)).ToList())
        {
            start.Environment.Remove(name);
        }

        start.Environment["POCKET_HOME"] = home;
        return start;
    }

    /// <summary>A provisioner that starts real `pocket storage` children of this build for <paramref name="core"/>'s metadata server.</summary>
    public static Pocket.Controller.Provisioning.LocalProcessProvisioner StorageProvisioner(Pocket.Embedded.PocketCluster core) => new(
        new Pocket.Controller.Provisioning.LocalProcessProvisionerOptions
        {
            Executable = Program.File,
            BaseArguments = Program.Prefix,
            MetadataAddress = core.MetadataAddress,
            ClusterToken = core.Options.ClusterToken,
            StartTimeout = TimeSpan.FromSeconds(90),
        },
        Microsoft.Extensions.Logging.Abstractions.NullLoggerFactory.Instance);

    /// <summary>Sets <paramref name="environment"/> (POCKET_* variables included) on <paramref name="start"/>.</summary>
    public static ProcessStartInfo WithEnvironment(ProcessStartInfo start, IReadOnlyDictionary<string, string> environment)
    {
        foreach (var (name, value) in environment)
        {
            start.Environment[name] = value;
        }

        return start;
    }

    public static Task<PocketResult> RunAsync(string home, params string[] arguments) =>
        RunAsync(home, new Dictionary<string, string>(), arguments);

    /// <summary>Runs with <paramref name="environment"/> set (POCKET_* variables included).</summary>
    public static Task<PocketResult> RunAsync(string home, IReadOnlyDictionary<string, string> environment, params string[] arguments) =>
        RunAsync(WithEnvironment(StartInfo(home, arguments), environment), arguments);

    /// <summary>
    /// Runs with its open-file limit (soft and hard) lowered to <paramref name="fileLimit"/>, as a shell's `ulimit -n`
    /// before exec does.
    /// </summary>
    public static Task<PocketResult> RunWithFileLimitAsync(string home, int fileLimit, params string[] arguments) =>
        RunAsync(InShell(StartInfo(home, arguments), $"ulimit -n {fileLimit}"), arguments);

    /// <summary>Runs <paramref name="start"/> through `sh -c "PREPARE && exec ..."`, so the pid stays the program's own.</summary>
    public static ProcessStartInfo InShell(ProcessStartInfo start, string prepare)
    {
        string[] command = [start.FileName, .. start.ArgumentList];
        start.FileName = "sh";
        start.ArgumentList.Clear();
        foreach (var argument in (string[])["-c", $"{prepare} && exec \"$@\"", "sh", .. command])
        {
            start.ArgumentList.Add(argument);
        }

        return start;
    }

    private static async Task<PocketResult> RunAsync(ProcessStartInfo start, string[] arguments)
    {
        using var process = Process.Start(start)!;
        process.StandardInput.Close();
        var stdout = process.StandardOutput.ReadToEndAsync();
        var stderr = process.StandardError.ReadToEndAsync();
        using var timeout = new CancellationTokenSource(Timeout);
        try
        {
            await process.WaitForExitAsync(timeout.Token);
        }
        catch (OperationCanceledException)
        {
            process.Kill(entireProcessTree: true);
            await process.WaitForExitAsync();
            Assert.Fail($"pocket {string.Join(' ', arguments)} did not finish within {Timeout.TotalSeconds} s\n{await stdout}\n{await stderr}");
        }

        return new PocketResult(process.ExitCode, await stdout, await stderr);
    }

    /// <summary>Runs and asserts exit code 0.</summary>
    public static async Task<PocketResult> RunOkAsync(string home, params string[] arguments)
    {
        var result = await RunAsync(home, arguments);
        Assert.True(result.ExitCode == 0, $"pocket {string.Join(' ', arguments)}: {result}");
        return result;
    }

    /// <summary>True while a process with this id runs (a zombie, dead but not yet reaped, counts as gone).</summary>
    public static bool IsRunning(int pid)
    {
        if (OperatingSystem.IsLinux())
        {
            try
            {
                var stat = File.ReadAllText($"/proc/{pid}/stat");
                return stat[(stat.LastIndexOf(')') + 2)..].FirstOrDefault() is not ('Z' or 'X');
            }
            catch (IOException)
            {
                return false;
            }
        }

        try
        {
            using var process = Process.GetProcessById(pid);
            return !process.HasExited;
        }
        catch (ArgumentException)
        {
            return false;
        }
    }

    /// <summary>Sends SIGTERM, as `kill PID` or a service manager does.</summary>
    public static void Terminate(int pid)
    {
        const int SigTerm = 15;
        Assert.True(OperatingSystem.IsLinux() || OperatingSystem.IsMacOS(), "SIGTERM needs a Unix");
        Assert.Equal(0, Kill(pid, SigTerm));
    }

    /// <summary>Sends SIGINT, as Ctrl-C or `kill -INT PID` does.</summary>
    public static void Interrupt(int pid)
    {
        const int SigInt = 2;
        Assert.True(OperatingSystem.IsLinux() || OperatingSystem.IsMacOS(), "SIGINT needs a Unix");
        Assert.Equal(0, Kill(pid, SigInt));
    }

    [LibraryImport("libc", EntryPoint = "kill", SetLastError = true)]
    private static partial int Kill(int pid, int signal);

    private static (string File, string[] Prefix) Locate()
    {
        // The project reference builds the CLI and copies it beside the tests.
        var directory = AppContext.BaseDirectory;
        var apphost = Path.Combine(directory, OperatingSystem.IsWindows() ? "pocket.exe" : "pocket");
        if (File.Exists(apphost))
        {
            return (apphost, []);
        }

        var dll = Path.Combine(directory, "pocket.dll");
        Assert.True(File.Exists(dll), $"no pocket executable in {directory}");
        return (Environment.GetEnvironmentVariable("DOTNET_HOST_PATH") ?? "dotnet", [dll]);
    }
}

/// <summary>A temporary POCKET_HOME, deleted afterwards.</summary>
internal sealed class TempHome : IDisposable
{
    public TempHome() => Directory.CreateDirectory(Path);

    public string Path { get; } = System.IO.Path.Combine(System.IO.Path.GetTempPath(), "pocket-cli-tests-" + Guid.NewGuid().ToString("N"));

    public string File(string name) => System.IO.Path.Combine(Path, name);

    public void Dispose()
    {
        try
        {
            Directory.Delete(Path, recursive: true);
        }
        catch (IOException)
        {
        }
    }
}

/// <summary>
/// `pocket up` running in the background: its stdout is read line by line (so it never blocks on a full pipe) and a
/// test waits for the line it needs. Disposing kills it and its children if the test did not stop it.
/// </summary>
internal sealed partial class UpProcess : IAsyncDisposable
{
    private readonly Process _process;
    private readonly Channel<string> _lines = Channel.CreateUnbounded<string>();
    private readonly StringBuilder _seen = new();
    private readonly StringBuilder _stderr = new();
    private readonly Channel<string> _errorLines = Channel.CreateUnbounded<string>();

    private UpProcess(Process process)
    {
        _process = process;
        process.OutputDataReceived += (_, e) =>
        {
            if (e.Data is null)
            {
                _lines.Writer.TryComplete();
            }
            else
            {
                _lines.Writer.TryWrite(e.Data);
            }
        };
        process.ErrorDataReceived += (_, e) =>
        {
            lock (_stderr)
            {
                _stderr.AppendLine(e.Data);
            }

            if (e.Data is null)
            {
                _errorLines.Writer.TryComplete();
            }
            else
            {
                _errorLines.Writer.TryWrite(e.Data);
            }
        };
        process.BeginOutputReadLine();
        process.BeginErrorReadLine();
    }

    public int Pid => _process.Id;

    public bool HasExited => _process.HasExited;

    public static UpProcess Start(string home, params string[] arguments) =>
        new(Process.Start(PocketProcess.StartInfo(home, ["up", .. arguments]))!);

    /// <summary>
    /// `pocket up` as a script's background job starts it: SIGINT ignored (a shell's `trap '' INT`, then exec, so the
    /// pid is pocket's own).
    /// </summary>
    public static UpProcess StartWithInterruptIgnored(string home, params string[] arguments) =>
        new(Process.Start(PocketProcess.InShell(PocketProcess.StartInfo(home, ["up", .. arguments]), "trap '' INT"))!);

    /// <summary>Any long-running command (a role), with <paramref name="environment"/> set.</summary>
    public static UpProcess StartCommand(string home, IReadOnlyDictionary<string, string> environment, params string[] arguments) =>
        new(Process.Start(PocketProcess.WithEnvironment(PocketProcess.StartInfo(home, arguments), environment))!);

    /// <summary>
    /// A role started with its open-file limit (soft and hard) lowered to <paramref name="fileLimit"/>, as a shell's
    /// `ulimit -n` before exec does (the pid is pocket's own).
    /// </summary>
    public static UpProcess StartCommandWithFileLimit(string home, IReadOnlyDictionary<string, string> environment, int fileLimit, params string[] arguments) =>
        new(Process.Start(PocketProcess.InShell(PocketProcess.WithEnvironment(PocketProcess.StartInfo(home, arguments), environment), $"ulimit -n {fileLimit}"))!);

    /// <summary>Reads lines until one matches; returns it. Fails if `pocket up` ends or the timeout passes first.</summary>
    public Task<string> WaitForLineAsync(Func<string, bool> match) => WaitForLineAsync(_lines, match);

    /// <summary>Reads standard error (where the roles log) until a line matches; returns it. Bounded like <see cref="WaitForLineAsync(Func{string, bool})"/>.</summary>
    public Task<string> WaitForErrorLineAsync(Func<string, bool> match) => WaitForLineAsync(_errorLines, match);

    /// <summary>
    /// Waits for a role's ready line (<paramref name="prefix"/>: `POCKET-METADATA `, `POCKET-NODE `); returns it and the
    /// address it gives (`address=HOST:PORT`).
    /// </summary>
    public async Task<(string Line, string Address)> WaitForReadyAsync(string prefix)
    {
        var line = await WaitForLineAsync(l => l.StartsWith(prefix, StringComparison.Ordinal));
        return (line, AddressPattern().Match(line).Groups[1].Value);
    }

    [GeneratedRegex(@"address=(\S+)")]
    private static partial Regex AddressPattern();

    private async Task<string> WaitForLineAsync(Channel<string> lines, Func<string, bool> match)
    {
        using var timeout = new CancellationTokenSource(PocketProcess.Timeout);
        try
        {
            await foreach (var line in lines.Reader.ReadAllAsync(timeout.Token))
            {
                if (lines == _lines)
                {
                    _seen.AppendLine(line);
                }

                if (match(line))
                {
                    return line;
                }
            }
        }
        catch (OperationCanceledException)
        {
            Assert.Fail($"pocket up printed no such line within {PocketProcess.Timeout.TotalSeconds} s:\n{Output}");
        }

        Assert.Fail($"pocket up ended before printing the line:\n{Output}");
        return string.Empty;
    }

    /// <summary>Everything printed so far.</summary>
    public string Output
    {
        get
        {
            lock (_stderr)
            {
                return $"stdout:\n{_seen}\nstderr:\n{_stderr}";
            }
        }
    }

    /// <summary>Waits for it to exit (bounded); returns the exit code.</summary>
    public async Task<int> WaitForExitAsync()
    {
        using var timeout = new CancellationTokenSource(PocketProcess.Timeout);
        try
        {
            await _process.WaitForExitAsync(timeout.Token);
        }
        catch (OperationCanceledException)
        {
            Assert.Fail($"pocket up did not stop within {PocketProcess.Timeout.TotalSeconds} s:\n{Output}");
        }

        // Collect the rest of stdout for assertions on the goodbye lines.
        while (_lines.Reader.TryRead(out var line))
        {
            _seen.AppendLine(line);
        }

        return _process.ExitCode;
    }

    public async ValueTask DisposeAsync()
    {
        if (!_process.HasExited)
        {
            _process.Kill(entireProcessTree: true);
            await _process.WaitForExitAsync();
        }

        _process.Dispose();
    }
}
