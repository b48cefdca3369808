using System.CommandLine;
using System.CommandLine.Parsing;
using System.Globalization;
using System.Text.Json.Nodes;
using Pocket.Admin;
using Pocket.Client;
using Pocket.Controller;
using Pocket.Controller.Contracts;
using Pocket.Protocol;
using Spectre.Console;

namespace Pocket.Cli.Commands;

/// <summary>
/// `pocket job register|ls|rm`: jobs through the controller's HTTP API (sized from hints), each job's token
/// remembered in jobs.json. With no controller but a metadata server named, jobs go to the metadata server directly.
/// </summary>
internal static class JobCommands
{
    public static Command Create()
    {
        var command = new Command("job", "Register, list, adopt and deregister jobs");
        command.Subcommands.Add(Register());
        command.Subcommands.Add(List());
        command.Subcommands.Add(Remove());
        command.Subcommands.Add(Add());
        return command;
    }

    private static Command Register()
    {
        var name = new Argument<string>("NAME") { Description = "Job name: letters, digits, '-', '_' or '.'; the cluster appends a number" };
        var functions = new Option<int?>("--functions") { Description = "Concurrent functions of the job", HelpName = "N" };
        var throughput = new Option<double?>("--throughput")
        {
            Description = "Peak throughput of the whole job (e.g. 2Gbps, 500Mb/s, 1GB/s)",
            HelpName = "RATE",
            CustomParser = ParseThroughput,
        };
        var capacity = CommandRunner.OptionalSizeOption("--capacity", "Most bytes the job stores at once (e.g. 10GiB)");
        var latencySensitive = new Option<bool>("--latency-sensitive")
        {
            Description = "Whether small requests must be fast (DRAM): true or false",
            DefaultValueFactory = _ => true,
            HelpName = "true|false",
        };
        var maxCapacity = LimitOption("--max-capacity", "Limit on the bytes the job stores (blocks and inline; 0 = no limit). Default: the sized capacity plus 25 %, one node's worth without hints");
        var maxObjects = new Option<long?>("--max-objects") { Description = "Limit on the job's objects (0 = no limit). Default: the byte limit / 1KiB, at least 100000", HelpName = "N" };
        var maxKeyBytes = LimitOption("--max-key-bytes", "Limit on the UTF-8 bytes of all the job's keys (0 = no limit). Default: 256 per object of the object limit");
        var lease = CommandRunner.DurationOption("--lease", "How long the job may go without a request before the controller reclaims it and frees its data (e.g. 30m, 1h, 1d). Default: the controller's, 5m");
        lease.Validators.Add(result =>
        {
            if (result.GetValueOrDefault<TimeSpan?>() is { } value && value <= TimeSpan.Zero)
            {
                result.AddError("--lease must be longer than 0 (e.g. 30m, 1h, 1d)");
            }
        });
        functions.Validators.Add(result =>
        {
            if (result.GetValueOrDefault<int?>() is < 0)
            {
                result.AddError("--functions must be >= 0");
            }
        });
        maxObjects.Validators.Add(result =>
        {
            if (result.GetValueOrDefault<long?>() is < 0)
            {
                result.AddError("--max-objects must be >= 0 (0 = no limit)");
            }
        });
        var json = CommandRunner.JsonOption();
        var controller = CommandRunner.ControllerOption();
        var metadata = CommandRunner.MetadataOption();
        var command = new Command("register", "Register a job (sized from its hints) and remember its token in $POCKET_HOME/jobs.json")
        {
            name, functions, throughput, capacity, latencySensitive, maxCapacity, maxObjects, maxKeyBytes, lease, json, controller, metadata,
        };
        CommandRunner.SetAction(command, async (parse, ct) =>
        {
            var home = PocketHome.Default();
            var jobName = parse.GetRequiredValue(name);
            var hints = new JobHints
            {
                Functions = parse.GetValue(functions),
                PeakThroughputBitsPerSecond = parse.GetValue(throughput),
                CapacityBytes = parse.GetValue(capacity),
                LatencySensitive = parse.GetValue(latencySensitive),
            };
            var limits = (MaxBytes: parse.GetValue(maxCapacity), MaxObjects: parse.GetValue(maxObjects), MaxKeyBytes: parse.GetValue(maxKeyBytes));
            using var connection = ControllerConnection.TryResolve(parse.GetValue(controller), parse.GetValue(metadata), home);
            if (connection is null)
            {
                if (hints != new JobHints())
                {
                    throw new CliException("hints need a controller (--controller URL or `pocket up`); a metadata server alone registers jobs unsized");
                }

                if (parse.GetValue(lease) is not null)
                {
                    throw new CliException("--lease needs a controller (--controller URL or `pocket up`): leases are kept by the controller; a job registered on a metadata server alone has none");
                }

                // Without a controller nothing is sized: limits not given are none.
                JobQuota? quota = limits == default ? null : new JobQuota(limits.MaxBytes ?? 0, limits.MaxObjects ?? 0, limits.MaxKeyBytes ?? 0);
                return await RegisterDirectAsync(jobName, parse.GetValue(metadata), quota, parse.GetValue(json), home, ct).ConfigureAwait(false);
            }

            hints = hints with { MaxCapacityBytes = limits.MaxBytes, MaxObjects = limits.MaxObjects, MaxKeyBytes = limits.MaxKeyBytes, Lease = parse.GetValue(lease) };
            var job = await connection.CallAsync(c => c.RegisterJobAsync(jobName, hints, ct)).ConfigureAwait(false);
            var entry = new JobEntry(job.JobId, job.Token.ToString(), job.Metadata, connection.Text);
            await RememberAsync(home, entry, ct).ConfigureAwait(false);
            if (parse.GetValue(json))
            {
                var node = ToJson(entry);
                node["tier"] = NodeTierNames.Name(job.Tier);
                node["nodes"] = new JsonArray([.. job.Nodes.Select(n => (JsonNode)new JsonObject { ["id"] = n.Id, ["address"] = n.Address, ["weight"] = n.Weight })]);
                node["throughputBitsPerSecond"] = job.ThroughputBitsPerSecond;
                node["capacityBytes"] = job.CapacityBytes;
                node["nodesNeeded"] = job.NodesNeeded;
                node["throughputBound"] = job.ThroughputBound;
                node["leaseSeconds"] = job.Lease.TotalSeconds;
                if (job.Quota is { } jobQuota)
                {
                    node["quota"] = QuotaJson(jobQuota);
                }

                CommandRunner.WriteJson(node);
                return 0;
            }

            AnsiConsole.MarkupLine($"registered job [bold]{Markup.Escape(job.JobId)}[/] on tier [bold]{NodeTierNames.Name(job.Tier)}[/] through {Markup.Escape(connection.Text)}");
            AnsiConsole.MarkupLine(Markup.Escape(string.Create(
                CultureInfo.InvariantCulture,
                $"sized for {Units.FormatBitsPerSecond(job.ThroughputBitsPerSecond)} and {Units.FormatBytes(job.CapacityBytes)} ({(job.ThroughputBound ? "throughput" : "capacity")}-bound, {job.NodesNeeded} node{(job.NodesNeeded == 1 ? "" : "s")} of its class); lease {Units.FormatDuration(job.Lease)}, renewed by every request")));
            if (job.Quota is { } limit)
            {
                AnsiConsole.MarkupLine(Markup.Escape($"quota: {FormatQuota(limit)}"));
            }

            var table = new Table().Border(TableBorder.Rounded)
                .AddColumn(new TableColumn("node").RightAligned())
                .AddColumn("address")
                .AddColumn(new TableColumn("weight").RightAligned());
            foreach (var node in job.Nodes)
            {
                table.AddRow(node.Id.ToString(CultureInfo.InvariantCulture), Markup.Escape(node.Address), node.Weight.ToString("0.###", CultureInfo.InvariantCulture));
            }

            AnsiConsole.Write(table);
            AnsiConsole.MarkupLine($"metadata: {Markup.Escape(job.Metadata)}");
            AnsiConsole.MarkupLine($"token: {entry.Token} (kept in {Markup.Escape(home.JobsFile)})");
            return 0;
        });
        return command;
    }

    /// <summary>The older flow: straight to the metadata server with the cluster token, no sizing.</summary>
    private static async Task<int> RegisterDirectAsync(string name, string? metadataOption, JobQuota? quota, bool json, PocketHome home, CancellationToken cancellationToken)
    {
        var connection = ClusterConnection.TryResolve(metadataOption, home)
            ?? throw new CliException($"no cluster: start one with `pocket up` (or pass --controller URL, or --metadata HOST:PORT)");
        var client = await connection.ConnectAsync(cancellationToken).ConfigureAwait(false);
        await using (client.ConfigureAwait(false))
        {
            var job = await client.Admin(connection.ClusterToken).RegisterJobAsync(name, NodeTier.Dram, null, quota, cancellationToken).ConfigureAwait(false);
            var entry = new JobEntry(job.Id, job.Token.ToString(), connection.Metadata);
            await RememberAsync(home, entry, cancellationToken).ConfigureAwait(false);
            if (json)
            {
                CommandRunner.WriteJson(ToJson(entry));
            }
            else
            {
                AnsiConsole.MarkupLine($"registered job [bold]{Markup.Escape(entry.Id)}[/] on {Markup.Escape(connection.Metadata)} (directly, unsized)");
                AnsiConsole.MarkupLine($"token: {entry.Token} (kept in {Markup.Escape(home.JobsFile)})");
            }
        }

        return 0;
    }

    /// <summary>A size limit: bytes or text such as 512MiB, where 0 (unlike other sizes) means "no limit".</summary>
    private static Option<long?> LimitOption(string name, string description) => new(name)
    {
        Description = description,
        HelpName = "SIZE",
        CustomParser = result =>
        {
            var text = result.Tokens.Count > 0 ? result.Tokens[0].Value : string.Empty;
            if (Units.TryParseBytes(text, out var bytes) && bytes >= 0)
            {
                return bytes;
            }

            result.AddError($"{name}: '{text}' is not a size (examples: 0 for no limit, 1000, 64MiB, 1GiB)");
            return null;
        },
    };

    /// <summary>A quota as text: "512 MiB, 100000 objects, 24.4 MiB of keys", each "no limit" when 0.</summary>
    internal static string FormatQuota(JobQuota quota) => string.Create(
        CultureInfo.InvariantCulture,
        $"{(quota.MaxBytes > 0 ? Units.FormatBytes(quota.MaxBytes) : "no byte limit")}, "
        + $"{(quota.MaxObjects > 0 ? $"{quota.MaxObjects} objects" : "no object limit")}, "
        + $"{(quota.MaxKeyBytes > 0 ? $"{Units.FormatBytes(quota.MaxKeyBytes)} of keys" : "no key-byte limit")}");

    private static JsonObject QuotaJson(JobQuota quota) => new()
    {
        ["maxBytes"] = quota.MaxBytes,
        ["maxObjects"] = quota.MaxObjects,
        ["maxKeyBytes"] = quota.MaxKeyBytes,
    };

    private static Task RememberAsync(PocketHome home, JobEntry entry, CancellationToken cancellationToken) =>
        home.UpdateJobsAsync(jobs =>
        {
            // Ids restart with each cluster, so an id from a cluster that is gone is simply replaced.
            jobs.RemoveAll(j => j.Id == entry.Id);
            jobs.Add(entry);
            return true;
        }, cancellationToken);

    private static Command List()
    {
        var json = CommandRunner.JsonOption();
        var controller = CommandRunner.ControllerOption();
        var metadata = CommandRunner.MetadataOption();
        var command = new Command("ls", "List the controller's jobs (which ones this user holds a token for), or those in $POCKET_HOME/jobs.json")
        {
            json, controller, metadata,
        };
        CommandRunner.SetAction(command, async (parse, ct) =>
        {
            var home = PocketHome.Default();
            var local = home.ReadJobs();
            using var connection = ControllerConnection.TryResolve(parse.GetValue(controller), parse.GetValue(metadata), home);
            if (connection is null)
            {
                // Without any cluster an empty list would read as "no jobs", which says nothing true.
                _ = ClusterConnection.TryResolve(parse.GetValue(metadata), home)
                    ?? throw new CliException("no cluster: start one with `pocket up` (or pass --controller URL, or --metadata HOST:PORT)");
                return ListLocal(local, parse.GetValue(json));
            }

            var jobs = await connection.CallAsync(c => c.ListJobsAsync(ct)).ConfigureAwait(false);
            var tokens = local.Select(j => j.Id).ToHashSet(StringComparer.Ordinal);
            if (parse.GetValue(json))
            {
                CommandRunner.WriteJson(new JsonArray([.. jobs.Select(j => (JsonNode)new JsonObject
                {
                    ["id"] = j.JobId,
                    ["name"] = j.Name,
                    ["tier"] = NodeTierNames.Name(j.Tier),
                    ["nodes"] = new JsonArray([.. j.Nodes.Select(n => (JsonNode)new JsonObject { ["id"] = n.Id, ["address"] = n.Address, ["weight"] = n.Weight })]),
                    ["throughputBitsPerSecond"] = j.ThroughputBitsPerSecond,
                    ["capacityBytes"] = j.CapacityBytes,
                    ["registeredAt"] = j.RegisteredAt,
                    ["leaseExpiresAt"] = j.LeaseExpiresAt,
                    ["localToken"] = tokens.Contains(j.JobId),
                })]));
                return 0;
            }

            var known = jobs.Select(j => j.JobId).ToHashSet(StringComparer.Ordinal);
            var elsewhere = local.Where(j => !known.Contains(j.Id) && (j.Controller is null || j.Controller == connection.Text)).Select(j => j.Id).ToList();
            var elsewhereLine = Markup.Escape(
                $"in {home.JobsFile} but not this controller's: {string.Join(", ", elsewhere)} (registered straight on a metadata server, or on a cluster that is gone; `pocket job rm ID` ends or forgets them)");
            if (jobs.Count == 0)
            {
                AnsiConsole.MarkupLine($"no jobs on {Markup.Escape(connection.Text)}: register one with `pocket job register NAME`");
                if (elsewhere.Count > 0)
                {
                    AnsiConsole.MarkupLine(elsewhereLine);
                }

                return 0;
            }

            var now = DateTimeOffset.UtcNow;
            var table = new Table().Border(TableBorder.Rounded)
                .AddColumn("job")
                .AddColumn("tier")
                .AddColumn("nodes")
                .AddColumn(new TableColumn("throughput").RightAligned())
                .AddColumn(new TableColumn("capacity").RightAligned())
                .AddColumn(new TableColumn("lease left").RightAligned())
                .AddColumn("token here");
            foreach (var job in jobs)
            {
                var left = job.LeaseExpiresAt - now;
                table.AddRow(
                    Markup.Escape(job.JobId),
                    NodeTierNames.Name(job.Tier),
                    string.Join(",", job.Nodes.Select(n => n.Id.ToString(CultureInfo.InvariantCulture))),
                    Units.FormatBitsPerSecond(job.ThroughputBitsPerSecond),
                    Units.FormatBytes(job.CapacityBytes),
                    left > TimeSpan.Zero ? Units.FormatDuration(TimeSpan.FromSeconds(Math.Round(left.TotalSeconds))) : "expired",
                    tokens.Contains(job.JobId) ? "[green]yes[/]" : "[grey]no[/]");
            }

            AnsiConsole.Write(table);
            if (elsewhere.Count > 0)
            {
                AnsiConsole.MarkupLine(elsewhereLine);
            }

            return 0;
        });
        return command;
    }

    private static int ListLocal(List<JobEntry> jobs, bool json)
    {
        if (json)
        {
            CommandRunner.WriteJson(new JsonArray([.. jobs.Select(j => (JsonNode)ToJson(j))]));
            return 0;
        }

        if (jobs.Count == 0)
        {
            AnsiConsole.MarkupLine("no jobs: register one with `pocket job register NAME`");
            return 0;
        }

        var table = new Table().Border(TableBorder.Rounded).AddColumn("job").AddColumn("metadata server").AddColumn("controller");
        foreach (var job in jobs)
        {
            table.AddRow(Markup.Escape(job.Id), Markup.Escape(job.Metadata ?? "?"), Markup.Escape(job.Controller ?? "-"));
        }

        AnsiConsole.Write(table);
        return 0;
    }

    /// <summary>`pocket job add ID TOKEN`: adopt a job registered elsewhere (another machine, a script, the API).</summary>
    private static Command Add()
    {
        var id = new Argument<string>("ID") { Description = "Job id, as its registration printed it (e.g. sort-1)" };
        var token = new Argument<string>("TOKEN") { Description = "The job's token, as its registration printed it" };
        var controller = CommandRunner.ControllerOption();
        var metadata = CommandRunner.MetadataOption();
        var command = new Command("add", "Remember a job registered elsewhere (its id and token) in $POCKET_HOME/jobs.json, so the data verbs can use it")
        {
            id, token, controller, metadata,
        };
        CommandRunner.SetAction(command, async (parse, ct) =>
        {
            var home = PocketHome.Default();
            var jobId = parse.GetRequiredValue(id).Trim();
            if (!JobToken.TryParse(parse.GetRequiredValue(token), out var jobToken) || jobToken.IsNone)
            {
                throw new CliException($"'{parse.GetRequiredValue(token)}' is not a job token (32 hex digits, as `pocket job register` prints it)");
            }

            // The data verbs need to know where the job's data is; without a cluster there is nowhere to look.
            var cluster = ClusterConnection.TryResolve(parse.GetValue(metadata), home)
                ?? throw new CliException("no cluster: pass --metadata HOST:PORT (the job's metadata server), or start one with `pocket up`");
            using var connection = ControllerConnection.TryResolve(parse.GetValue(controller), parse.GetValue(metadata), home);
            var check = await CheckAdoptedAsync(cluster, jobId, jobToken, ct).ConfigureAwait(false);
            var entry = new JobEntry(jobId, jobToken.ToString(), cluster.Metadata, connection?.Text);
            await RememberAsync(home, entry, ct).ConfigureAwait(false);
            AnsiConsole.MarkupLine(Markup.Escape($"added job {jobId} (metadata {cluster.Metadata}) to {home.JobsFile}{check}"));
            return 0;
        });
        return command;
    }

    /// <summary>
    /// Asks the job's metadata server whether the token is the job's: a wrong or ended one is refused with what the server
    /// says (an ended job's reason); an unreachable server is not (adopting ahead of time is allowed) and says so.
    /// </summary>
    private static async Task<string> CheckAdoptedAsync(ClusterConnection cluster, string jobId, JobToken token, CancellationToken cancellationToken)
    {
        PocketClient client;
        try
        {
            client = await cluster.ConnectAsync(cancellationToken).ConfigureAwait(false);
        }
        catch (Exception ex) when (ex is CliException or PocketUnreachableException)
        {
            return $" (not checked: {ex.Message})";
        }

        await using (client.ConfigureAwait(false))
        {
            JobUsage usage;
            try
            {
                usage = await client.OpenJob(jobId, token).GetUsageAsync(cancellationToken).ConfigureAwait(false);
            }
            catch (PocketUnauthorizedException ex)
            {
                throw new CliException($"the metadata server at {cluster.Metadata} refused job {jobId}'s token: {ex.Message}", ex);
            }
            catch (PocketException ex) when (ex.Status == Pocket.Protocol.Status.NotFound)
            {
                throw new CliException($"the token is not job {jobId}'s on {cluster.Metadata}: {ex.Message}", ex);
            }

            return usage.JobId == jobId
                ? string.Create(CultureInfo.InvariantCulture, $"; it holds {usage.Objects} objects")
                : throw new CliException($"that token is job {usage.JobId}'s, not {jobId}'s");
        }
    }

    private static Command Remove()
    {
        var id = new Argument<string>("ID") { Description = "Job id, as `pocket job ls` shows it" };
        var controller = CommandRunner.ControllerOption();
        var metadata = CommandRunner.MetadataOption();
        var command = new Command("rm", "Deregister a job: every object it stored is freed at once") { id, controller, metadata };
        CommandRunner.SetAction(command, async (parse, ct) =>
        {
            var home = PocketHome.Default();
            var jobId = parse.GetRequiredValue(id);
            var known = home.ReadJobs().Find(j => j.Id == jobId);
            using var connection = ControllerConnection.TryResolve(parse.GetValue(controller), parse.GetValue(metadata), home);
            string outcome;

            // A job registered straight on the metadata server is unknown to any controller: end it where it lives.
            if (connection is null || (known is { Controller: null } && parse.GetValue(controller) is null))
            {
                outcome = await RemoveDirectAsync(jobId, known, parse.GetValue(metadata), home, ct).ConfigureAwait(false);
            }
            else
            {
                try
                {
                    var ended = await connection.CallAsync(c => c.DeregisterAsync(jobId, ct)).ConfigureAwait(false);
                    outcome = string.Create(CultureInfo.InvariantCulture, $"deregistered job {jobId}: freed {ended.ObjectsFreed} objects, {Units.FormatBytes(ended.BytesFreed)}");
                }
                catch (PocketControllerException ex) when (ex.HttpStatus == System.Net.HttpStatusCode.NotFound && known is not null)
                {
                    // The cluster that knew the job is gone; forgetting it locally is all that is left to do.
                    outcome = $"job {jobId} is not registered on {connection.Text} ({ex.Message}); removed it from {home.JobsFile}";
                }
            }

            await home.UpdateJobsAsync(jobs => jobs.RemoveAll(j => j.Id == jobId), ct).ConfigureAwait(false);
            AnsiConsole.MarkupLine(Markup.Escape(outcome));
            return 0;
        });
        return command;
    }

    private static async Task<string> RemoveDirectAsync(string jobId, JobEntry? known, string? metadataOption, PocketHome home, CancellationToken cancellationToken)
    {
        var connection = ClusterConnection.TryResolve(metadataOption, home, known)
            ?? throw new CliException($"no cluster: start one with `pocket up` (or pass --controller URL, or --metadata HOST:PORT)");
        var client = await connection.ConnectAsync(cancellationToken).ConfigureAwait(false);
        await using (client.ConfigureAwait(false))
        {
            try
            {
                var (objects, bytes) = await client.Admin(connection.ClusterToken).DeregisterJobAsync(jobId, cancellationToken).ConfigureAwait(false);
                return string.Create(CultureInfo.InvariantCulture, $"deregistered job {jobId}: freed {objects} objects, {Units.FormatBytes(bytes)}");
            }
            catch (ObjectNotFoundException) when (known is not null)
            {
                return $"job {jobId} is not registered on {connection.Metadata}; removed it from {home.JobsFile}";
            }
        }
    }

    private static double? ParseThroughput(ArgumentResult result)
    {
        var text = result.Tokens.Count > 0 ? result.Tokens[0].Value : string.Empty;
        if (Units.TryParseBitsPerSecond(text, out var bitsPerSecond) && bitsPerSecond > 0 && double.IsFinite(bitsPerSecond))
        {
            return bitsPerSecond;
        }

        result.AddError($"--throughput: '{text}' is not a throughput (examples: 2Gbps, 500Mb/s, 1GB/s)");
        return null;
    }

    private static JsonObject ToJson(JobEntry job) => new()
    {
        ["id"] = job.Id,
        ["token"] = job.Token,
        ["metadata"] = job.Metadata,
        ["controller"] = job.Controller,
    };
}
