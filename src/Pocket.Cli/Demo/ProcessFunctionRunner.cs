using System.Diagnostics;
using System.Globalization;
using System.Text.Json;
using System.Text.Json.Serialization;
using Pocket.Controller.Provisioning;
using Pocket.LoadGenerator.Sort;
using Pocket.Protocol;

namespace Pocket.Cli.Demo;

/// <summary>
/// Functions as short-lived processes, as Lambda runs them: each map or reduce is a fresh process (`pocket
/// demo-function`, or the Python client's `sort_function.py`) that connects to the metadata server, opens the job
/// with its token, does its one step, prints its result as one JSON line and exits. The token travels in the
/// environment, never on the command line (where ps shows it).
/// </summary>
internal sealed class ProcessFunctionRunner(string kind, string executable, IReadOnlyList<string> baseArguments, string metadata, string jobId, JobToken token, SortPlan plan, IReadOnlyDictionary<string, string>? environment = null)
    : IFunctionRunner
{
    public const string TokenVariable = "POCKET_JOB_TOKEN";

    /// <summary>`pocket demo-function map|reduce ...` of this executable.</summary>
    public static ProcessFunctionRunner Dotnet(string metadata, string jobId, JobToken token, SortPlan plan)
    {
        var (executable, baseArguments) = LocalProcessProvisionerOptions.CurrentProgram();
        return new("processes", executable, [.. baseArguments, "demo-function"], metadata, jobId, token, plan);
    }

    /// <summary>
    /// `python sort_function.py map|reduce ...` with the Python client that ships beside this executable (in
    /// python/), run by <paramref name="python"/>.
    /// </summary>
    public static ProcessFunctionRunner Python(string python, string metadata, string jobId, JobToken token, SortPlan plan)
    {
        var root = Path.Combine(AppContext.BaseDirectory, "python");
        var script = Path.Combine(root, "examples", "sort_function.py");
        if (!File.Exists(script))
        {
            throw new CliException($"the Python functions are missing: no {script}");
        }

        return new("python", python, [script], metadata, jobId, token, plan, new Dictionary<string, string> { ["PYTHONPATH"] = root, ["PYTHONDONTWRITEBYTECODE"] = "1" });
    }

    public string Kind => kind;

    public Task<FunctionResult> MapAsync(int mapper, CancellationToken cancellationToken) => RunAsync("map", mapper, cancellationToken);

    public Task<FunctionResult> ReduceAsync(int reducer, CancellationToken cancellationToken) => RunAsync("reduce", reducer, cancellationToken);

    private async Task<FunctionResult> RunAsync(string function, int index, CancellationToken cancellationToken)
    {
        var start = new ProcessStartInfo(executable)
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            RedirectStandardInput = false,
            UseShellExecute = false,
        };
        foreach (var argument in baseArguments)
        {
            start.ArgumentList.Add(argument);
        }

        foreach (var argument in new[]
        {
            function,
            "--metadata", metadata,
            "--job", jobId,
            "--index", index.ToString(CultureInfo.InvariantCulture),
            "--mappers", plan.Mappers.ToString(CultureInfo.InvariantCulture),
            "--reducers", plan.Reducers.ToString(CultureInfo.InvariantCulture),
        })
        {
            start.ArgumentList.Add(argument);
        }

        start.Environment[TokenVariable] = token.ToString();
        foreach (var (name, value) in environment ?? new Dictionary<string, string>())
        {
            start.Environment[name] = value;
        }

        Process process;
        try
        {
            process = Process.Start(start) ?? throw new CliException($"could not start {executable}");
        }
        catch (System.ComponentModel.Win32Exception ex)
        {
            throw new CliException($"could not start {executable} for the {kind} functions: {ex.Message}", ex);
        }

        using var _ = process;
        var stdout = process.StandardOutput.ReadToEndAsync(CancellationToken.None);
        var stderr = process.StandardError.ReadToEndAsync(CancellationToken.None);
        try
        {
            await process.WaitForExitAsync(cancellationToken).ConfigureAwait(false);
        }
        catch (OperationCanceledException)
        {
            // A function outliving its driver would keep writing into a job that is being deregistered.
            process.Kill(entireProcessTree: true);
            await process.WaitForExitAsync(CancellationToken.None).ConfigureAwait(false);
            throw;
        }

        var output = await stdout.ConfigureAwait(false);
        var errors = (await stderr.ConfigureAwait(false)).Trim();
        if (process.ExitCode != 0)
        {
            throw new CliException($"{function} function {index} (pid {process.Id}) failed with exit code {process.ExitCode}: {errors}");
        }

        var line = output.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries).LastOrDefault();
        try
        {
            return (line is null ? null : JsonSerializer.Deserialize(line, DemoJsonContext.Default.FunctionResult))
                ?? throw new CliException($"{function} function {index} printed no result");
        }
        catch (JsonException ex)
        {
            throw new CliException($"{function} function {index} printed '{line}', not a result: {ex.Message}", ex);
        }
    }
}

[JsonSourceGenerationOptions(JsonSerializerDefaults.Web)]
[JsonSerializable(typeof(FunctionResult))]
internal sealed partial class DemoJsonContext : JsonSerializerContext;
