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
}
