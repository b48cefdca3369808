using System.CommandLine;
using System.CommandLine.Parsing;
using System.Net;
using System.Text.Json;
using System.Text.Json.Nodes;
using Pocket.Client;
using Pocket.Controller;
using Pocket.Controller.Contracts;
using Pocket.LoadGenerator;
using Pocket.Protocol;
using Spectre.Console;

namespace Pocket.Cli;

/// <summary>What every command shares: the error contract (one red line, exit code 1), common options, output.</summary>
internal static class CommandRunner
{
    private static readonly JsonSerializerOptions Indented = new() { WriteIndented = true };

    /// <summary>Diagnostics go to stderr so that stdout stays clean for data and --json.</summary>
    public static IAnsiConsole Error { get; } = AnsiConsole.Create(new AnsiConsoleSettings { Out = new AnsiConsoleOutput(Console.Error) });

    /// <summary>
    /// Spectre wraps at 80 columns when output is not a terminal; a line that scripts read (or grep) must stay
    /// one line, so redirected output gets a width no line reaches.
    /// </summary>
    public static void ConfigureConsoles()
    {
        const int Unbounded = 4096;
        if (Console.IsOutputRedirected)
        {
            AnsiConsole.Profile.Width = Unbounded;
        }

        if (Console.IsErrorRedirected)
        {
            Error.Profile.Width = Unbounded;
        }
    }

    /// <summary>True when stdout is a terminal a person watches (progress bars and colours make sense).</summary>
    public static bool StdoutIsInteractive => !Console.IsOutputRedirected && AnsiConsole.Profile.Capabilities.Interactive;

    public static void SetAction(Command command, Func<ParseResult, CancellationToken, Task<int>> action) =>
        command.SetAction(async (parseResult, cancellationToken) =>
        {
            try
            {
                // Read here, not in each action: PocketCommandLine gives every command that connects these options.
                var trust = parseResult.CommandResult.Command.Options.OfType<TrustOption>().ToDictionary(o => o.Name, StringComparer.Ordinal);
                if (trust.Count > 0)
                {
                    ClientTls.UseOptions(TrustValue(ClientTls.OptionName), TrustValue(ClientTls.NameOptionName));
                }

                string? TrustValue(string name) => trust.TryGetValue(name, out var option) ? parseResult.GetValue(option) : null;

                return await action(parseResult, cancellationToken).ConfigureAwait(false);
            }
            catch (OperationCanceledException) when (cancellationToken.IsCancellationRequested)
            {
                Fail("cancelled");
                return 130;
            }
            catch (Exception ex) when (IsExpected(ex))
            {
                Fail(ex.Message);
                return 1;
            }
        });

    /// <summary>One line on stderr, red when stderr is a terminal; never wrapped, whatever the width.</summary>
    public static void Fail(string message)
    {
        var text = message.ReplaceLineEndings(" ");
        Console.Error.WriteLine(Console.IsErrorRedirected ? $"error: {text}" : $"\u001b[31merror:\u001b[0m {text}");
    }

    private static bool IsExpected(Exception ex) =>
        ex is CliException or PocketException or IOException or UnauthorizedAccessException or TimeoutException
            || LoadGeneratorException.IsExpected(ex);

    public static void WriteJson(JsonNode node) => Console.Out.WriteLine(node.ToJsonString(Indented));

    public static Option<string?> MetadataOption() => new("--metadata")
    {
        Description = $"Metadata server HOST:PORT (default: ${ClusterConnection.MetadataVariable}, else the cluster of `pocket up`)",
        HelpName = "HOST:PORT",
    };

    public static Option<string?> ControllerOption() => new("--controller")
    {
        Description = $"Controller URL (default: ${ControllerConnection.Variable}, else the cluster of `pocket up`)",
        HelpName = "URL",
    };

    public static Option<bool> JsonOption() => new("--json") { Description = "Print JSON instead of a table" };

    public static Option<long> SizeOption(string name, long defaultValue, string description) => new(name)
    {
        Description = description,
        HelpName = "SIZE",
        DefaultValueFactory = _ => defaultValue,
        CustomParser = result => ParseSize(result),
    };

    /// <summary>
    /// A size with no default (null when not given), for settings whose default depends on other options; with
    /// <paramref name="allowZero"/> 0 is a size too (a bound that turns something off).
    /// </summary>
    public static Option<long?> OptionalSizeOption(string name, string description, bool allowZero = false) => new(name)
    {
        Description = description,
        HelpName = "SIZE",
        CustomParser = result => ParseSize(result, allowZero),
    };

    public static Option<TimeSpan?> DurationOption(string name, string description) => new(name)
    {
        Description = description,
        HelpName = "DURATION",
        CustomParser = result => ParseDuration(result),
    };

    /// <summary>
    /// <paramref name="option"/>, refusing a port outside 0-65535 (0 = any free port) with one line that names it,
    /// before any listener is built from it.
    /// </summary>
    public static Option<T> PortRange<T>(Option<T> option)
    {
        option.Validators.Add(result =>
        {
            if (result.GetValueOrDefault<int?>() is < IPEndPoint.MinPort or > IPEndPoint.MaxPort)
            {
                result.AddError($"{option.Name} must be between {IPEndPoint.MinPort} and {IPEndPoint.MaxPort}");
            }
        });
        return option;
    }

    /// <summary>A storage tier by name (dram, ssd, hdd), dram when not given.</summary>
    public static Option<NodeTier> TierOption(string name, string description) => new(name)
    {
        Description = description,
        HelpName = string.Join('|', NodeTierNames.All.Select(NodeTierNames.Name)),
        DefaultValueFactory = _ => NodeTier.Dram,
        CustomParser = result =>
        {
            var text = result.Tokens.Count > 0 ? result.Tokens[0].Value : string.Empty;
            if (NodeTierNames.TryParse(text, out var tier))
            {
                return tier;
            }

            result.AddError($"{name}: {NodeTierNames.Unknown(text)}");
            return NodeTier.Dram;
        },
    };

    /// <summary>The option a value belongs to, for an error that says which one of several was wrong.</summary>
    public static string OptionName(ArgumentResult result) => result.Parent is OptionResult option ? option.Option.Name : result.Argument.Name;

    private static long ParseSize(ArgumentResult result, bool allowZero = false)
    {
        var text = result.Tokens.Count > 0 ? result.Tokens[0].Value : string.Empty;
        if (Units.TryParseBytes(text, out var bytes) && (bytes > 0 || (allowZero && bytes == 0)))
        {
            return bytes;
        }

        // A size option is a capacity or an amount of data, which means nothing at 0 unless it is a bound that 0 turns off.
        result.AddError($"{OptionName(result)}: '{text}' is not a size {(allowZero ? "of 0 or more" : "above 0")} (examples: 1000, 1KiB, 64MiB, 1GiB)");
        return 0;
    }

    private static TimeSpan? ParseDuration(ArgumentResult result)
    {
        var text = result.Tokens.Count > 0 ? result.Tokens[0].Value : string.Empty;
        if (Units.TryParseDuration(text, out var duration))
        {
            return duration;
        }

        result.AddError($"{OptionName(result)}: '{text}' is not a duration (examples: 500ms, 10s, 2m)");
        return null;
    }
}
