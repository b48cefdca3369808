using System.CommandLine;
using System.CommandLine.Invocation;
using Pocket.Cli;
using Pocket.Cli.Commands;

// Thin on purpose: each command group lives in Commands/, the work itself in the Pocket libraries.
CommandRunner.ConfigureConsoles();
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

var parse = root.Parse(args);
if (parse.Action is ParseErrorAction error && parse.CommandResult.Command != root)
{
    // A mistyped option gets its one-line error; the whole help page would bury it.
    error.ShowHelp = false;
}

// Ctrl-C and SIGTERM cancel the running command; `pocket up` needs time to stop its servers cleanly.
return await parse.InvokeAsync(new InvocationConfiguration { ProcessTerminationTimeout = TimeSpan.FromSeconds(30) });
