using Pocket.Controller.Provisioning;
using Pocket.Protocol;

namespace Pocket.Cli.Tests;

/// <summary>
/// `--event-loops` of the binary-protocol roles, and `POCKET_EVENT_LOOPS`, its default, which reaches the roles a
/// `pocket up` or `pocket bench` starts: the server runs that many event-loop threads.
/// </summary>
public sealed class EventLoopsOptionTests : IDisposable
{
    private readonly TempHome _home = new();

    public void Dispose() => _home.Dispose();

    [Theory]
    [InlineData("1", "", 1)]
    [InlineData("", "3", 3)]
    [InlineData("1", "3", 1)]
    [InlineData("", "", 0)]
    public async Task TheMetadataServerRunsAsManyLoopsAsItIsGiven(string option, string variable, int expected)
    {
        Assert.True(OperatingSystem.IsLinux(), "the event loops (and /proc) are Linux's");
        var environment = new Dictionary<string, string>
        {
            ["POCKET_CLUSTER_TOKEN"] = JobToken.NewRandom().ToString(),
            ["POCKET_EVENT_LOOPS"] = variable,
        };
        string[] arguments = option.Length > 0 ? ["metadata", "--port", "0", "--event-loops", option] : ["metadata", "--port", "0"];

        await using var metadata = UpProcess.StartCommand(_home.Path, environment, arguments);
        await metadata.WaitForLineAsync(line => line.StartsWith(RoleCommandLine.MetadataReadyPrefix, StringComparison.Ordinal));

        // The loops start with the listener, before the ready line; thread names are cut to 15 bytes ("metadata loop 0").
        var loops = Directory.GetDirectories($"/proc/{metadata.Pid}/task")
            .Count(task => File.ReadAllText(Path.Combine(task, "comm")).StartsWith("metadata loop", StringComparison.Ordinal));
        Assert.Equal(expected > 0 ? expected : Math.Max(2, Environment.ProcessorCount), loops);
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task UpGivesEveryServerItStartsTheLoopsItIsGiven(bool inProcess)
    {
        Assert.True(OperatingSystem.IsLinux(), "the event loops (and /proc) are Linux's");
        string[] arguments = ["--port", "0", "--controller-port", "0", "--no-gateway", "--nodes", "1", "--capacity", "64MiB", "--event-loops", "3", "--for", "10m"];
        await using var up = UpProcess.Start(_home.Path, inProcess ? [.. arguments, "--in-process"] : arguments);
        await up.WaitForLineAsync(line => line.StartsWith("stopping by itself", StringComparison.Ordinal));

        // The servers run in `pocket up` itself or in its child roles; either way each has three loops.
        var pids = Directory.GetDirectories("/proc")
            .Select(Path.GetFileName)
            .Where(name => name!.All(char.IsAsciiDigit))
            .Select(name => int.Parse(name!, System.Globalization.CultureInfo.InvariantCulture))
            .Where(pid => pid == up.Pid || ParentOf(pid) == up.Pid)
            .ToList();
        Assert.Equal(3, LoopThreads(pids, "metadata loop"));
        Assert.Equal(3, LoopThreads(pids, "storage loop"));
    }

    [Fact]
    public async Task AVariableThatIsNoNumberIsRefusedByName()
    {
        var result = await PocketProcess.RunAsync(_home.Path, new Dictionary<string, string> { ["POCKET_EVENT_LOOPS"] = "many" }, "metadata", "--port", "0");
        Assert.True(result.ExitCode == 1, result.ToString());
        var line = Assert.Single(result.Stderr.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries));
        Assert.StartsWith("error: ", line, StringComparison.Ordinal);
        Assert.Contains("POCKET_EVENT_LOOPS", line, StringComparison.Ordinal);
        Assert.Contains("'many'", line, StringComparison.Ordinal);
    }

    private static int LoopThreads(IEnumerable<int> pids, string prefix) =>
        pids.Sum(pid => Directory.Exists($"/proc/{pid}/task")
            ? Directory.GetDirectories($"/proc/{pid}/task").Count(task => ReadOrEmpty(Path.Combine(task, "comm")).StartsWith(prefix, StringComparison.Ordinal))
            : 0);

    /// <summary>The parent of a process, or 0 when it is gone (field 4 of /proc/PID/stat, after the parenthesised name).</summary>
    private static int ParentOf(int pid)
    {
        var stat = ReadOrEmpty($"/proc/{pid}/stat");
        var fields = stat[(stat.LastIndexOf(')') + 1)..].Split(' ', StringSplitOptions.RemoveEmptyEntries);
        return fields.Length > 1 && int.TryParse(fields[1], System.Globalization.CultureInfo.InvariantCulture, out var parent) ? parent : 0;
    }

    private static string ReadOrEmpty(string path)
    {
        try
        {
            return File.ReadAllText(path);
        }
        catch (IOException)
        {
            return ""; // a process or thread that ended while it was read
        }
    }
}
