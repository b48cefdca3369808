using System.CommandLine;
using System.Diagnostics;
using System.Globalization;
using System.Text.Json.Nodes;
using Pocket.Client;
using Pocket.Controller;
using Pocket.Controller.Contracts;
using Pocket.Protocol;
using Spectre.Console;

namespace Pocket.Cli.Commands;

/// <summary>`pocket put|get|ls|rm|stat`: object verbs on keys written JOB/KEY, JOB being a job in jobs.json, else any job (or bucket, by its name) the controller knows.</summary>
internal static class DataCommands
{
    /// <summary>Smaller transfers finish before a progress bar would be worth drawing.</summary>
    private const long ProgressThreshold = 16L << 20;

    public static IEnumerable<Command> Create() => [Put(), Get(), List(), Remove(), Stat()];

    private static Command Put()
    {
        var file = new Argument<string>("FILE") { Description = "File to upload, or - for stdin" };
        var target = new Argument<string>("JOB/KEY") { Description = "Job id and key of the new object" };
        var keep = new Option<bool>("--keep-after-job") { Description = "The object outlives its job until its own time to live" };
        var metadata = CommandRunner.MetadataOption();
        var command = new Command("put", "Store a file (or stdin) as an object") { file, target, keep, metadata };
        CommandRunner.SetAction(command, async (parse, ct) =>
        {
            var (jobId, key) = ParseJobKey(parse.GetRequiredValue(target), requireKey: true);
            var path = parse.GetRequiredValue(file);
            var flags = parse.GetValue(keep) ? PutFlags.KeepAfterJob : PutFlags.None;
            long? size = path == "-" ? null : FileLength(path);
            return await WithJobAsync(parse.GetValue(metadata), jobId, async job =>
            {
                var clock = Stopwatch.StartNew();
                try
                {
                    if (size is null)
                    {
                        var stdin = Console.OpenStandardInput();
                        await using (stdin.ConfigureAwait(false))
                        {
                            await job.PutAsync(key, stdin, flags, ct).ConfigureAwait(false);
                        }

                        size = (await job.LookupAsync(key, ct).ConfigureAwait(false))?.Size ?? 0;
                    }
                    else
                    {
                        await WithProgressAsync($"put {key}", size.Value, progress => job.PutFileAsync(key, path, flags, progress, ct)).ConfigureAwait(false);
                    }
                }
                catch (ObjectExistsException ex)
                {
                    throw new CliException($"{ex.Message} in job '{jobId}': objects are write-once, `pocket rm {jobId}/{key}` first", ex);
                }

                AnsiConsole.MarkupLine(Markup.Escape($"put {jobId}/{key}: {Units.FormatBytes(size.Value)} in {Rate(size.Value, clock.Elapsed)}"));
                return 0;
            }, ct).ConfigureAwait(false);
        });
        return command;
    }

    private static Command Get()
    {
        var source = new Argument<string>("JOB/KEY") { Description = "Job id and key of the object" };
        var file = new Argument<string>("FILE") { Description = "File to write (replaced if present), or - for stdout" };
        var deleteAfterRead = new Option<bool>("--delete-after-read") { Description = "Delete the object once read" };
        var metadata = CommandRunner.MetadataOption();
        var command = new Command("get", "Read an object into a file (or stdout)") { source, file, deleteAfterRead, metadata };
        CommandRunner.SetAction(command, async (parse, ct) =>
        {
            var (jobId, key) = ParseJobKey(parse.GetRequiredValue(source), requireKey: true);
            var path = parse.GetRequiredValue(file);
            var flags = parse.GetValue(deleteAfterRead) ? GetFlags.DeleteAfterRead : GetFlags.None;
            return await WithJobAsync(parse.GetValue(metadata), jobId, async job =>
            {
                if (path == "-")
                {
                    // Data goes to stdout, so nothing else may: no progress, no summary.
                    var stdout = Console.OpenStandardOutput();
                    await using (stdout.ConfigureAwait(false))
                    {
                        await job.GetAsync(key, stdout, 0, -1, flags, null, ct).ConfigureAwait(false);
                        await stdout.FlushAsync(ct).ConfigureAwait(false);
                    }

                    return 0;
                }

                var info = await job.LookupAsync(key, ct).ConfigureAwait(false) ?? throw NoObject(jobId, key);
                var clock = Stopwatch.StartNew();

                // Written beside the target and renamed at the end, so a failed read never leaves half a file
                // or destroys the file that was there.
                var full = Path.GetFullPath(path);
                var partial = $"{full}.pocket-{Environment.ProcessId}.part";
                try
                {
                    await WithProgressAsync($"get {key}", info.Size, progress => job.GetFileAsync(key, partial, flags, progress, ct)).ConfigureAwait(false);
                    File.Move(partial, full, overwrite: true);
                }
                catch
                {
                    File.Delete(partial);
                    throw;
                }

                AnsiConsole.MarkupLine(Markup.Escape($"got {jobId}/{key}: {Units.FormatBytes(info.Size)} in {Rate(info.Size, clock.Elapsed)} -> {path}"));
                return 0;
            }, ct).ConfigureAwait(false);
        });
        return command;
    }

    private static Command List()
    {
        var prefix = new Argument<string>("JOB[/PREFIX]") { Description = "Job id, optionally followed by a key prefix" };
        var recursive = new Option<bool>("--recursive", "-r") { Description = "List every object under the prefix instead of folding sub-directories" };
        var json = CommandRunner.JsonOption();
        var metadata = CommandRunner.MetadataOption();
        var command = new Command("ls", "List objects of a job") { prefix, recursive, json, metadata };
        CommandRunner.SetAction(command, async (parse, ct) =>
        {
            var (jobId, keyPrefix) = ParseJobKey(parse.GetRequiredValue(prefix), requireKey: false);
            return await WithJobAsync(parse.GetValue(metadata), jobId, async job =>
            {
                var entries = new List<ListEntry>();
                await foreach (var entry in job.ListAsync(keyPrefix, delimited: !parse.GetValue(recursive), cancellationToken: ct).ConfigureAwait(false))
                {
                    entries.Add(entry);
                }

                if (parse.GetValue(json))
                {
                    CommandRunner.WriteJson(new JsonArray([.. entries.Select(e => (JsonNode)new JsonObject
                    {
                        ["key"] = e.Key,
                        ["size"] = e.IsPrefix ? null : e.Size,
                        ["prefix"] = e.IsPrefix,
                    })]));
                    return 0;
                }

                // Plain lines rather than a table: `pocket ls` output is meant to be piped into other tools.
                foreach (var entry in entries)
                {
                    var size = entry.IsPrefix ? "DIR" : entry.Size.ToString(CultureInfo.InvariantCulture);
                    Console.Out.WriteLine($"{size,14}  {entry.Key}");
                }

                return 0;
            }, ct).ConfigureAwait(false);
        });
        return command;
    }

    private static Command Remove()
    {
        var target = new Argument<string>("JOB/KEY") { Description = "Job id and key (with --recursive: key prefix)" };
        var recursive = new Option<bool>("--recursive", "-r") { Description = "Delete every object whose key starts with the prefix" };
        var metadata = CommandRunner.MetadataOption();
        var command = new Command("rm", "Delete an object, or every object under a prefix") { target, recursive, metadata };
        CommandRunner.SetAction(command, async (parse, ct) =>
        {
            var (jobId, key) = ParseJobKey(parse.GetRequiredValue(target), requireKey: true);
            return await WithJobAsync(parse.GetValue(metadata), jobId, async job =>
            {
                var deleted = await job.DeleteAsync(key, parse.GetValue(recursive), ct).ConfigureAwait(false);
                AnsiConsole.MarkupLine(Markup.Escape(string.Create(CultureInfo.InvariantCulture, $"deleted {deleted} object{(deleted == 1 ? "" : "s")}")));
                return 0;
            }, ct).ConfigureAwait(false);
        });
        return command;
    }

    private static Command Stat()
    {
        var target = new Argument<string>("JOB/KEY") { Description = "Job id and key of the object" };
        var json = CommandRunner.JsonOption();
        var metadata = CommandRunner.MetadataOption();
        var command = new Command("stat", "Show an object's size and where its blocks are") { target, json, metadata };
        CommandRunner.SetAction(command, async (parse, ct) =>
        {
            var (jobId, key) = ParseJobKey(parse.GetRequiredValue(target), requireKey: true);
            return await WithJobAsync(parse.GetValue(metadata), jobId, async job =>
            {
                var info = await job.LookupAsync(key, ct).ConfigureAwait(false) ?? throw NoObject(jobId, key);
                var nodes = (await job.GetNodesAsync(ct).ConfigureAwait(false)).ToDictionary(n => n.Id);
                string AddressOf(uint id) => nodes.TryGetValue(id, out var node) ? node.Address : "unknown";
                if (parse.GetValue(json))
                {
                    CommandRunner.WriteJson(new JsonObject
                    {
                        ["job"] = jobId,
                        ["key"] = key,
                        ["size"] = info.Size,
                        ["inline"] = info.Inline,
                        ["blocks"] = new JsonArray([.. info.Blocks.Select(b => (JsonNode)new JsonObject
                        {
                            ["node"] = b.NodeId,
                            ["address"] = AddressOf(b.NodeId),
                            ["state"] = b.NodeState.ToString().ToLowerInvariant(),
                            ["offset"] = b.Offset,
                            ["length"] = b.Length,
                        })]),
                    });
                    return 0;
                }

                AnsiConsole.MarkupLine(Markup.Escape(string.Create(CultureInfo.InvariantCulture, $"{jobId}/{key}: {info.Size} bytes ({Units.FormatBytes(info.Size)})")));
                if (info.Inline)
                {
                    AnsiConsole.MarkupLine("stored inline in the metadata server (small object)");
                    return 0;
                }

                var table = new Table().Border(TableBorder.Rounded)
                    .AddColumn(new TableColumn("#").RightAligned())
                    .AddColumn(new TableColumn("node").RightAligned())
                    .AddColumn("address")
                    .AddColumn("state")
                    .AddColumn(new TableColumn("offset").RightAligned())
                    .AddColumn(new TableColumn("length").RightAligned());
                for (var i = 0; i < info.Blocks.Count; i++)
                {
                    var b = info.Blocks[i];
                    table.AddRow(
                        i.ToString(CultureInfo.InvariantCulture),
                        b.NodeId.ToString(CultureInfo.InvariantCulture),
                        AddressOf(b.NodeId),
                        b.NodeState.ToString().ToLowerInvariant(),
                        b.Offset.ToString(CultureInfo.InvariantCulture),
                        b.Length.ToString(CultureInfo.InvariantCulture));
                }

                AnsiConsole.Write(table);
                var perNode = info.Blocks.GroupBy(b => b.NodeId).OrderBy(g => g.Key)
                    .Select(g => string.Create(CultureInfo.InvariantCulture, $"node {g.Key}: {g.Count()} block{(g.Count() == 1 ? "" : "s")}, {Units.FormatBytes(g.Sum(b => (long)b.Length))}"));
                AnsiConsole.MarkupLine(Markup.Escape(string.Join("; ", perNode)));
                return 0;
            }, ct).ConfigureAwait(false);
        });
        return command;
    }

    /// <summary>"JOB/KEY" into its parts. A job id never holds '/', so the first one separates them.</summary>
    internal static (string JobId, string Key) ParseJobKey(string text, bool requireKey)
    {
        var slash = text.IndexOf('/', StringComparison.Ordinal);
        var jobId = slash < 0 ? text : text[..slash];
        var key = slash < 0 ? string.Empty : text[(slash + 1)..];
        if (jobId.Length == 0)
        {
            throw new CliException($"'{text}' does not start with a job id (expected JOB/KEY)");
        }

        if (requireKey && key.Length == 0)
        {
            throw new CliException($"'{text}' has no key (expected JOB/KEY)");
        }

        var valid = requireKey
            ? ObjectKey.IsValid(key, ProtocolLimits.Default, out var error)
            : ObjectKey.IsValidPrefix(key, ProtocolLimits.Default, out error);
        return valid ? (jobId, key) : throw new CliException(error);
    }

    /// <summary>Opens the job with the token from jobs.json and turns "wrong token" into advice.</summary>
    private static async Task<int> WithJobAsync(string? metadataOption, string jobId, Func<PocketJob, Task<int>> action, CancellationToken cancellationToken)
    {
        var home = PocketHome.Default();
        var entry = await JobLookup.ResolveAsync(home, jobId, metadataOption, cancellationToken).ConfigureAwait(false);
        if (!JobToken.TryParse(entry.Token, out var token))
        {
            throw new CliException($"job '{jobId}' has a bad token in {home.JobsFile}");
        }

        // A name (a bucket made through S3) resolves to its job's id.
        jobId = entry.Id;

        var connection = ClusterConnection.Resolve(metadataOption, home, entry);
        var client = await connection.ConnectAsync(cancellationToken).ConfigureAwait(false);
        await using (client.ConfigureAwait(false))
        {
            try
            {
                return await action(client.OpenJob(jobId, token)).ConfigureAwait(false);
            }
            catch (PocketUnauthorizedException ex)
            {
                var where = entry.Metadata is null || entry.Metadata == connection.Metadata ? string.Empty : $" (it was registered on {entry.Metadata})";
                throw new CliException($"the cluster at {connection.Metadata} does not know job '{jobId}'{where}: register a job again ({ex.Message})", ex);
            }
        }
    }

    private static CliException NoObject(string jobId, string key) => new($"no object '{key}' in job '{jobId}'");

    private static long FileLength(string path)
    {
        var info = new FileInfo(path);
        return info.Exists ? info.Length : throw new CliException($"no such file: {path}");
    }

    private static async Task WithProgressAsync(string description, long size, Func<IProgress<long>?, Task> transfer)
    {
        if (size < ProgressThreshold || !CommandRunner.StdoutIsInteractive)
        {
            await transfer(null).ConfigureAwait(false);
            return;
        }

        await AnsiConsole.Progress()
            .AutoClear(true)
            .Columns(new TaskDescriptionColumn(), new ProgressBarColumn(), new PercentageColumn(), new TransferSpeedColumn(), new RemainingTimeColumn())
            .StartAsync(async context =>
            {
                var task = context.AddTask(Markup.Escape(description), maxValue: size);
                await transfer(new ProgressReporter(task)).ConfigureAwait(false);
                task.Value = size;
            }).ConfigureAwait(false);
    }

    private static string Rate(long bytes, TimeSpan elapsed) =>
        string.Create(CultureInfo.InvariantCulture, $"{elapsed.TotalSeconds:0.###} s ({bytes / Math.Max(elapsed.TotalSeconds, 1e-9) / (1 << 20):0.#} MiB/s)");

    /// <summary>The client reports bytes done so far, from whichever thread moved them.</summary>
    private sealed class ProgressReporter(ProgressTask task) : IProgress<long>
    {
        public void Report(long value) => task.Value = Math.Max(task.Value, value);
    }
}
