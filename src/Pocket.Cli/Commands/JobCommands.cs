using System.CommandLine;
using System.Globalization;
using System.Text.Json.Nodes;
using Pocket.Client;
using Spectre.Console;

namespace Pocket.Cli.Commands;

/// <summary>`pocket job register|ls|rm`: jobs this user registered, remembered with their tokens in jobs.json.</summary>
internal static class JobCommands
{
    public static Command Create()
    {
        var command = new Command("job", "Register, list and deregister jobs");
        command.Subcommands.Add(Register());
        command.Subcommands.Add(List());
        command.Subcommands.Add(Remove());
        return command;
    }

    private static Command Register()
    {
        var name = new Argument<string>("NAME") { Description = "Job name: letters, digits, '-', '_' or '.'; the cluster appends a number" };
        var json = CommandRunner.JsonOption();
        var metadata = CommandRunner.MetadataOption();
        var command = new Command("register", "Register a job and remember its token in $POCKET_HOME/jobs.json") { name, json, metadata };
        CommandRunner.SetAction(command, async (parse, ct) =>
        {
            var home = PocketHome.Default();
            var connection = ClusterConnection.Resolve(parse.GetValue(metadata), home);
            var client = await connection.ConnectAsync(ct).ConfigureAwait(false);
            await using (client.ConfigureAwait(false))
            {
                var job = await client.RegisterJobAsync(parse.GetRequiredValue(name), ct).ConfigureAwait(false);
                var entry = new JobEntry(job.Id, job.Token.ToString(), connection.Metadata);
                await home.UpdateJobsAsync(jobs =>
                {
                    // Ids restart with each cluster, so an id from a cluster that is gone is simply replaced.
                    jobs.RemoveAll(j => j.Id == entry.Id);
                    jobs.Add(entry);
                    return true;
                }, ct).ConfigureAwait(false);

                if (parse.GetValue(json))
                {
                    CommandRunner.WriteJson(ToJson(entry));
                }
                else
                {
                    AnsiConsole.MarkupLine($"registered job [bold]{Markup.Escape(entry.Id)}[/] on {Markup.Escape(connection.Metadata)}");
                    AnsiConsole.MarkupLine($"token: {entry.Token} (kept in {Markup.Escape(home.JobsFile)})");
                }
            }

            return 0;
        });
        return command;
    }

    private static Command List()
    {
        var json = CommandRunner.JsonOption();
        var command = new Command("ls", "List the jobs in $POCKET_HOME/jobs.json") { json };
        CommandRunner.SetAction(command, (parse, _) =>
        {
            var jobs = PocketHome.Default().ReadJobs();
            if (parse.GetValue(json))
            {
                CommandRunner.WriteJson(new JsonArray([.. jobs.Select(ToJson)]));
                return Task.FromResult(0);
            }

            if (jobs.Count == 0)
            {
                AnsiConsole.MarkupLine("no jobs: register one with `pocket job register NAME`");
                return Task.FromResult(0);
            }

            var table = new Table().Border(TableBorder.Rounded).AddColumn("job").AddColumn("metadata server");
            foreach (var job in jobs)
            {
                table.AddRow(Markup.Escape(job.Id), Markup.Escape(job.Metadata ?? "?"));
            }

            AnsiConsole.Write(table);
            return Task.FromResult(0);
        });
        return command;
    }

    private static Command Remove()
    {
        var id = new Argument<string>("ID") { Description = "Job id, as `pocket job ls` shows it" };
        var metadata = CommandRunner.MetadataOption();
        var command = new Command("rm", "Deregister a job: every object it stored is freed at once") { id, metadata };
        CommandRunner.SetAction(command, async (parse, ct) =>
        {
            var home = PocketHome.Default();
            var jobId = parse.GetRequiredValue(id);
            var connection = ClusterConnection.Resolve(parse.GetValue(metadata), home);
            var client = await connection.ConnectAsync(ct).ConfigureAwait(false);
            await using (client.ConfigureAwait(false))
            {
                string outcome;
                try
                {
                    var (objects, bytes) = await client.DeregisterJobAsync(jobId, ct).ConfigureAwait(false);
                    outcome = string.Create(CultureInfo.InvariantCulture, $"deregistered job {jobId}: freed {objects} objects, {Units.FormatSize(bytes)}");
                }
                catch (ObjectNotFoundException) when (home.ReadJobs().Exists(j => j.Id == jobId))
                {
                    // The cluster that knew the job is gone; forgetting it locally is all that is left to do.
                    outcome = $"job {jobId} is not registered on {connection.Metadata}; removed it from {home.JobsFile}";
                }

                await home.UpdateJobsAsync(jobs => jobs.RemoveAll(j => j.Id == jobId), ct).ConfigureAwait(false);
                AnsiConsole.MarkupLine(Markup.Escape(outcome));
            }

            return 0;
        });
        return command;
    }

    private static JsonObject ToJson(JobEntry job) => new()
    {
        ["id"] = job.Id,
        ["token"] = job.Token,
        ["metadata"] = job.Metadata,
    };
}
