using System.CommandLine;
using System.CommandLine.Completions;
using System.CommandLine.Help;

namespace Pocket.Cli.Tests;

/// <summary>
/// Bad input to the real `pocket` executable: one line on stderr, exit code 1, never a stack trace. The options are
/// taken from the command tree itself, so an option added later is covered without touching this test.
/// </summary>
public sealed class InputValidationTests : IDisposable
{
    private readonly TempHome _home = new();

    public void Dispose() => _home.Dispose();

    /// <summary>Every option of every command whose value is not free text or a switch.</summary>
    public static TheoryData<string[]> TypedOptions() => new(TypedOptionArguments());

    private static List<string[]> TypedOptionArguments()
    {
        var rows = new List<string[]>();
        foreach (var (path, command) in PocketCommandLine.Commands(PocketCommandLine.Create()))
        {
            foreach (var option in command.Options.Where(IsTyped))
            {
                rows.Add([.. path, .. command.Arguments.Select(ValidArgument), .. OtherRequired(command, option), option.Name, "abc"]);
            }
        }

        return rows;
    }

    [Theory]
    [MemberData(nameof(TypedOptions))]
    public async Task ANonNumericValueIsOneLineAndExit1(string[] arguments)
    {
        var result = await PocketProcess.RunAsync(_home.Path, arguments);
        var option = arguments[^2];
        Assert.True(result.ExitCode == 1, $"pocket {string.Join(' ', arguments)}: {result}");
        var lines = result.Stderr.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
        var line = Assert.Single(lines);
        Assert.StartsWith("error: ", line, StringComparison.Ordinal);
        Assert.Contains(option, line, StringComparison.Ordinal);
        Assert.Contains("'abc'", line, StringComparison.Ordinal);
        Assert.DoesNotContain("Exception", result.Stderr, StringComparison.Ordinal);
        Assert.DoesNotContain("System.", result.Stderr, StringComparison.Ordinal);
    }

    [Fact]
    public void TheTreeHasTheOptionsTheIssueNames()
    {
        // Guards the enumeration above: if it found nothing, the theory would pass without testing anything.
        var all = TypedOptionArguments().Select(row => string.Join(' ', row)).ToList();
        Assert.Contains("job register x --functions abc", all);
        Assert.Contains("up --port abc", all);
        Assert.Contains("up --capacity abc", all);
        Assert.True(all.Count >= 40, $"only {all.Count} typed options found");
    }

    [Theory]
    [InlineData("job", "register", "x", "--capacity", "0")]
    [InlineData("job", "register", "x", "--capacity", "-1GiB")]
    [InlineData("job", "register", "x", "--functions", "-1")]
    [InlineData("job", "register", "x", "--throughput", "0")]
    [InlineData("up", "--capacity", "0")]
    [InlineData("up", "--port", "70000")]
    [InlineData("up", "--gateway-port", "70000")]
    [InlineData("metadata", "--port", "70000")]
    [InlineData("metadata", "--metrics-port", "-1")]
    [InlineData("controller", "--metadata", "127.0.0.1:1", "--node-capacity", "0")]
    [InlineData("job", "register", "x", "--max-capacity", "-1")]
    [InlineData("job", "register", "x", "--max-objects", "-1")]
    [InlineData("job", "register", "x", "--lease", "0")]
    [InlineData("job", "register", "x", "--lease", "soon")]
    [InlineData("metadata", "--max-object-memory", "0")]
    [InlineData("metadata", "--max-connections", "0")]
    [InlineData("metadata", "--listen-backlog", "-1")]
    [InlineData("storage", "--metadata", "127.0.0.1:1", "--max-connections", "-5")]
    [InlineData("up", "--max-object-memory", "0")]
    [InlineData("up", "--inline-capacity", "-1")]
    [InlineData("storage", "--metadata", "127.0.0.1:1", "--capacity", "0")]
    [InlineData("metadata", "--event-loops", "-1")]
    [InlineData("storage", "--metadata", "127.0.0.1:1", "--event-loops", "257")]
    [InlineData("metadata", "--reply-pause", "0")]
    [InlineData("storage", "--metadata", "127.0.0.1:1", "--reply-pause", "9MiB")]
    [InlineData("metadata", "--reply-stall-timeout", "-1s")]
    [InlineData("bench", "--size", "0")]
    public async Task ASizeOrCountThatMakesNoSenseIsRefused(params string[] arguments)
    {
        var result = await PocketProcess.RunAsync(_home.Path, arguments);
        Assert.True(result.ExitCode == 1, $"pocket {string.Join(' ', arguments)}: {result}");
        var line = Assert.Single(result.Stderr.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries));
        Assert.StartsWith("error: ", line, StringComparison.Ordinal);
        Assert.Contains(arguments[^2], line, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("job", "ls")]
    [InlineData("job", "register", "x")]
    [InlineData("ls", "job-1")]
    [InlineData("status")]
    public async Task TalkingToNoClusterIsAnError(params string[] arguments)
    {
        var result = await PocketProcess.RunAsync(_home.Path, arguments);
        Assert.True(result.ExitCode == 1, $"pocket {string.Join(' ', arguments)}: {result}");
        var line = Assert.Single(result.Stderr.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries));
        Assert.StartsWith("error: ", line, StringComparison.Ordinal);
    }

    private static bool IsTyped(Option option) =>
        option is not (HelpOption or VersionOption)
            && option.ValueType != typeof(bool) && option.ValueType != typeof(string) && option.ValueType != typeof(string[]);

    /// <summary>The first value an argument offers (`map` for one of map|reduce), else any word.</summary>
    private static string ValidArgument(Argument argument) =>
        argument.GetCompletions(CompletionContext.Empty).FirstOrDefault()?.Label ?? "x";

    /// <summary>Valid values for the command's other required options, so the only error is the one under test.</summary>
    private static IEnumerable<string> OtherRequired(Command command, Option tested) =>
        command.Options.Where(o => o.Required && o != tested).SelectMany(o => new[] { o.Name, o.ValueType == typeof(string) ? "x" : "1" });
}

/// <summary>`pocket up` on a port another process listens on: one line naming the port and what to change.</summary>
public sealed class UpBusyPortTests : IDisposable
{
    private readonly TempHome _home = new();

    public void Dispose() => _home.Dispose();

    [Theory]
    [InlineData("--port")]
    [InlineData("--controller-port")]
    [InlineData("--gateway-port")]
    public async Task ABusyPortFailsAtOnceWithOneLine(string option)
    {
        using var holder = new System.Net.Sockets.TcpListener(System.Net.IPAddress.Loopback, 0);
        holder.Start();
        var busy = ((System.Net.IPEndPoint)holder.LocalEndpoint).Port.ToString(System.Globalization.CultureInfo.InvariantCulture);
        var arguments = new List<string> { "up", "--nodes", "1", "--capacity", "64MiB", "--for", "1m" };
        foreach (var port in new[] { "--port", "--controller-port", "--gateway-port" })
        {
            arguments.AddRange([port, port == option ? busy : "0"]);
        }

        var result = await PocketProcess.RunAsync(_home.Path, [.. arguments]);
        Assert.True(result.ExitCode == 1, result.ToString());
        var line = Assert.Single(result.Stderr.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries));
        Assert.StartsWith("error: ", line, StringComparison.Ordinal);
        Assert.Contains(busy, line, StringComparison.Ordinal);
        Assert.Contains("in use", line, StringComparison.Ordinal);
        Assert.Contains(option, line, StringComparison.Ordinal);
        Assert.DoesNotContain("token", line, StringComparison.OrdinalIgnoreCase);
    }
}

/// <summary>`pocket job add ID TOKEN`: a job registered elsewhere, adopted into jobs.json.</summary>
public sealed class JobAddTests : IDisposable
{
    private readonly TempHome _home = new();

    public void Dispose() => _home.Dispose();

    [Fact]
    public async Task AnAdoptedJobIsRememberedWithItsMetadataServer()
    {
        var token = Pocket.Protocol.JobToken.NewRandom().ToString();
        await PocketProcess.RunOkAsync(_home.Path, "job", "add", "sort-7", token, "--metadata", "127.0.0.1:7070");
        var jobs = System.Text.Json.Nodes.JsonNode.Parse(await File.ReadAllTextAsync(_home.File("jobs.json")))!.AsArray();
        var job = Assert.Single(jobs)!;
        Assert.Equal("sort-7", job["id"]!.GetValue<string>());
        Assert.Equal(token, job["token"]!.GetValue<string>());
        Assert.Equal("127.0.0.1:7070", job["metadata"]!.GetValue<string>());
    }

    [Theory]
    [InlineData("not-a-token", "--metadata", "127.0.0.1:7070")]
    [InlineData("00000000000000000000000000000000", "--metadata", "127.0.0.1:7070")]
    public async Task ABadTokenIsOneLineAndNothingIsRemembered(params string[] rest)
    {
        var result = await PocketProcess.RunAsync(_home.Path, ["job", "add", "sort-7", .. rest]);
        Assert.True(result.ExitCode == 1, result.ToString());
        var line = Assert.Single(result.Stderr.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries));
        Assert.Contains("is not a job token", line, StringComparison.Ordinal);
        Assert.False(File.Exists(_home.File("jobs.json")));
    }

    [Fact]
    public async Task AdoptingWithNoClusterNamedIsAnError()
    {
        var result = await PocketProcess.RunAsync(_home.Path, "job", "add", "sort-7", Pocket.Protocol.JobToken.NewRandom().ToString());
        Assert.True(result.ExitCode == 1, result.ToString());
        Assert.Contains("no cluster", Assert.Single(result.Stderr.Split('\n', StringSplitOptions.RemoveEmptyEntries)), StringComparison.Ordinal);
    }
}
