using System.CommandLine;
using System.CommandLine.Parsing;
using System.Globalization;
using System.Numerics;
using Pocket.Cli.Commands;

namespace Pocket.Cli;

/// <summary>
/// The whole `pocket` command tree, and the rules every option follows whoever declared it: a value that does not
/// parse is one line naming the option (never an exception out of a validator), whatever command it belongs to.
/// </summary>
internal static class PocketCommandLine
{
    public static RootCommand Create()
    {
        var root = new RootCommand("pocket: elastic ephemeral storage for serverless analytics")
        {
            UpCommand.Create(),
            JobCommands.Create(),
            StatusCommand.Create(),
            BenchCommand.Create(),
            SimulateCommand.Create(),
        };
        foreach (var command in DataCommands.Create().Concat(DemoCommand.Create()).Concat(RoleCommands.Create()).Append(S3Commands.Create()))
        {
            root.Subcommands.Add(command);
        }

        GiveTrustOptions(root);
        Harden(root);
        return root;
    }

    /// <summary>
    /// Every command that connects to a cluster (it names one with --metadata or --controller) takes --tls-ca and
    /// --tls-name, so a self-signed cluster is trusted without an environment variable. The roles that have their own
    /// (pocket storage, pocket controller) keep theirs, which mean the same.
    /// </summary>
    private static void GiveTrustOptions(Command root)
    {
        foreach (var (_, command) in Commands(root))
        {
            var names = command.Options.Select(o => o.Name).ToHashSet(StringComparer.Ordinal);
            if ((names.Contains("--metadata") || names.Contains("--controller"))
                && !names.Contains(ClientTls.OptionName) && !names.Contains(ClientTls.NameOptionName))
            {
                var (trust, name) = ClientTls.Options();
                command.Options.Add(trust);
                command.Options.Add(name);
            }
        }
    }

    /// <summary>Every command under <paramref name="root"/>, with the words that name it (root first).</summary>
    public static IEnumerable<(IReadOnlyList<string> Path, Command Command)> Commands(Command root)
    {
        var pending = new Stack<(IReadOnlyList<string>, Command)>();
        pending.Push(([], root));
        while (pending.Count > 0)
        {
            var (path, command) = pending.Pop();
            yield return (path, command);
            foreach (var child in command.Subcommands)
            {
                pending.Push(([.. path, child.Name], child));
            }
        }
    }

    /// <summary>
    /// Numbers the parser would reject with a type name ("System.Int32") get a message a user reads, and a
    /// validator never runs on a value that did not parse: System.CommandLine runs option validators even after
    /// the conversion failed, and reading the value there throws, which used to end `pocket` with a stack trace.
    /// </summary>
    private static void Harden(Command root)
    {
        foreach (var (_, command) in Commands(root))
        {
            foreach (var option in command.Options)
            {
                GiveNumberParser(option);
                for (var i = 0; i < option.Validators.Count; i++)
                {
                    var validate = option.Validators[i];
                    option.Validators[i] = result =>
                    {
                        if (Parsed(result))
                        {
                            validate(result);
                        }
                    };
                }
            }
        }
    }

    /// <summary>A parse error as one line that names the option it is about, whoever wrote the message.</summary>
    public static string Describe(ParseError error)
    {
        var option = error.SymbolResult switch
        {
            OptionResult o => o.Option.Name,
            ArgumentResult { Parent: OptionResult o } => o.Option.Name,
            _ => null,
        };
        return option is null || error.Message.Contains(option, StringComparison.Ordinal) ? error.Message : $"{option}: {error.Message}";
    }

    private static bool Parsed(OptionResult result)
    {
        try
        {
            _ = result.GetValueOrDefault<object?>();
            return true;
        }
        catch (InvalidOperationException)
        {
            // The conversion failed and already recorded its own error for the user.
            return false;
        }
    }

    private static void GiveNumberParser(Option option)
    {
        switch (option)
        {
            case Option<int> { CustomParser: null } o: o.CustomParser = r => Number<int>(r, o.Name, "a whole number"); break;
            case Option<int?> { CustomParser: null } o: o.CustomParser = r => Number<int>(r, o.Name, "a whole number"); break;
            case Option<long> { CustomParser: null } o: o.CustomParser = r => Number<long>(r, o.Name, "a whole number"); break;
            case Option<long?> { CustomParser: null } o: o.CustomParser = r => Number<long>(r, o.Name, "a whole number"); break;
            case Option<ulong> { CustomParser: null } o: o.CustomParser = r => Number<ulong>(r, o.Name, "a whole number >= 0"); break;
            case Option<ulong?> { CustomParser: null } o: o.CustomParser = r => Number<ulong>(r, o.Name, "a whole number >= 0"); break;
            case Option<double> { CustomParser: null } o: o.CustomParser = r => Number<double>(r, o.Name, "a number"); break;
            case Option<double?> { CustomParser: null } o: o.CustomParser = r => Number<double>(r, o.Name, "a number"); break;
        }
    }

    private static T Number<T>(ArgumentResult result, string option, string what)
        where T : INumber<T>
    {
        var text = result.Tokens.Count > 0 ? result.Tokens[0].Value : string.Empty;
        if (T.TryParse(text, NumberStyles.Integer | NumberStyles.AllowDecimalPoint | NumberStyles.AllowExponent, CultureInfo.InvariantCulture, out var value)
            && (value is not double d || double.IsFinite(d)))
        {
            return value;
        }

        result.AddError($"{option}: '{text}' is not {what}");
        return T.Zero;
    }
}
