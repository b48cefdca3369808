using System.CommandLine;
using System.CommandLine.Invocation;
using Pocket.Cli;

// Thin on purpose: each command group lives in Commands/, the work itself in the Pocket libraries.
InterruptSignal.Restore();
CommandRunner.ConfigureConsoles();
var root = PocketCommandLine.Create();
var parse = root.Parse(args);
if (parse.Errors.Count > 0 && parse.CommandResult.Command != root)
{
    // A mistyped option gets its one-line error, in the same form as every other failure; the whole help page
    // would bury it.
    foreach (var error in parse.Errors)
    {
        CommandRunner.Fail(PocketCommandLine.Describe(error));
    }

    return 1;
}

// Ctrl-C and SIGTERM cancel the running command; `pocket up` needs time to stop its servers cleanly.
return await parse.InvokeAsync(new InvocationConfiguration { ProcessTerminationTimeout = TimeSpan.FromSeconds(30) });
