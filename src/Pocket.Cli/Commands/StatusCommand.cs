using System.CommandLine;
using System.Globalization;
using System.Text.Json.Nodes;
using Pocket.Client;
using Pocket.Controller;
using Pocket.Controller.Contracts;
using Pocket.Protocol;
using Spectre.Console;
using Spectre.Console.Rendering;

namespace Pocket.Cli.Commands;

/// <summary>`pocket status`: nodes (tier, state, capacity, CPU, network) and jobs, from the controller; --watch refreshes it every second.</summary>
internal static class StatusCommand
{
    private const double MB = 1e6;

    /// <summary>Events shown under the tables.</summary>
    private const int EventsShown = 10;

    public static Command Create()
    {
        var json = CommandRunner.JsonOption();
        var watch = new Option<bool>("--watch", "-w") { Description = "Refresh every second until Ctrl-C (with --json: one JSON line per second)" };
        var controller = CommandRunner.ControllerOption();
        var command = new Command("status", "Show the cluster: storage nodes, their load, and the jobs") { json, watch, controller };
        CommandRunner.SetAction(command, async (parse, ct) =>
        {
            using var connection = ControllerConnection.Resolve(parse.GetValue(controller), PocketHome.Default());
            if (!parse.GetValue(watch))
            {
                var snapshot = await SnapshotAsync(connection, ct).ConfigureAwait(false);
                if (parse.GetValue(json))
                {
                    CommandRunner.WriteJson(ToJson(snapshot));
                }
                else
                {
                    AnsiConsole.Write(Render(snapshot, connection.Text));
                }

                return 0;
            }

            try
            {
                if (parse.GetValue(json))
                {
                    await WatchJsonAsync(connection, ct).ConfigureAwait(false);
                }
                else
                {
                    await WatchAsync(connection, ct).ConfigureAwait(false);
                }
            }
            catch (OperationCanceledException) when (ct.IsCancellationRequested)
            {
                // Ctrl-C is how a watch ends.
            }

            return 0;
        });
        return command;
    }

    /// <summary>The cluster plus each job's usage (GET /v1/cluster leaves usage out; one GET /v1/jobs/{id} per job adds it).</summary>
    private static async Task<Snapshot> SnapshotAsync(ControllerConnection connection, CancellationToken cancellationToken)
    {
        var cluster = await connection.CallAsync(c => c.GetClusterAsync(cancellationToken)).ConfigureAwait(false);
        var usages = await Task.WhenAll(cluster.Jobs.Select(async job =>
        {
            try
            {
                return (await connection.Client.GetJobAsync(job.JobId, cancellationToken).ConfigureAwait(false))?.Usage;
            }
            catch (PocketControllerException)
            {
                // The job may have ended between the two requests; its usage is simply unknown.
                return null;
            }
        })).ConfigureAwait(false);
        var events = await EventsAsync(connection, cancellationToken).ConfigureAwait(false);
        return new Snapshot(cluster, usages, DateTimeOffset.UtcNow) { Events = events };
    }

    /// <summary>The last events; a controller without the events endpoint (or a failed call) shows none rather than failing the status.</summary>
    private static async Task<IReadOnlyList<EventResponse>> EventsAsync(ControllerConnection connection, CancellationToken cancellationToken)
    {
        try
        {
            return await connection.Client.GetEventsAsync(EventsShown, cancellationToken).ConfigureAwait(false);
        }
        catch (PocketControllerException)
        {
            return [];
        }
    }

    private static async Task WatchAsync(ControllerConnection connection, CancellationToken cancellationToken)
    {
        await AnsiConsole.Live(new Markup("connecting ...")).AutoClear(false).StartAsync(async context =>
        {
            while (true)
            {
                IRenderable view;
                try
                {
                    view = Render(await SnapshotAsync(connection, cancellationToken).ConfigureAwait(false), connection.Text);
                }
                catch (CliException ex)
                {
                    // Keep watching: a controller that restarts comes back into view.
                    view = new Markup($"[red]{Markup.Escape(ex.Message)}[/] (retrying every second)");
                }

                context.UpdateTarget(new Rows(view, new Markup("[grey]refreshing every second; Ctrl-C to stop[/]")));
                context.Refresh();
                await Task.Delay(TimeSpan.FromSeconds(1), cancellationToken).ConfigureAwait(false);
            }
        }).ConfigureAwait(false);
    }

    private static async Task WatchJsonAsync(ControllerConnection connection, CancellationToken cancellationToken)
    {
        while (true)
        {
            try
            {
                var snapshot = await SnapshotAsync(connection, cancellationToken).ConfigureAwait(false);
                Console.Out.WriteLine(ToJson(snapshot).ToJsonString());
            }
            catch (CliException ex)
            {
                // As the live table does: keep watching, a controller that restarts comes back.
                CommandRunner.Fail(ex.Message);
            }

            await Task.Delay(TimeSpan.FromSeconds(1), cancellationToken).ConfigureAwait(false);
        }
    }

    private static Rows Render(Snapshot snapshot, string controller)
    {
        var cluster = snapshot.Cluster;
        var nodes = new Table().Border(TableBorder.Rounded).Title("storage nodes")
            .AddColumn(new TableColumn("node").RightAligned())
            .AddColumn("address")
            .AddColumn("tier")
            .AddColumn("state")
            .AddColumn(new TableColumn("used / total").RightAligned())
            .AddColumn(new TableColumn("allocated").RightAligned())
            .AddColumn(new TableColumn("cpu").RightAligned())
            .AddColumn(new TableColumn("rx MB/s").RightAligned())
            .AddColumn(new TableColumn("tx MB/s").RightAligned());
        foreach (var node in cluster.Nodes.OrderBy(n => n.Id))
        {
            var state = node.State.ToString().ToLowerInvariant();
            nodes.AddRow(
                node.Id.ToString(CultureInfo.InvariantCulture),
                Markup.Escape(node.Address),
                NodeTierNames.Name(node.Tier),
                node.State == Protocol.NodeState.Live ? $"[green]{state}[/]" : $"[yellow]{state}[/]",
                $"{Units.FormatBytes(node.Capacity.Used)} / {Units.FormatBytes(node.Capacity.Total)}",
                Percent(node.Allocated.Share),
                Percent(node.Cpu),
                (node.Network.RxBytesPerSecond / MB).ToString("0.0", CultureInfo.InvariantCulture),
                (node.Network.TxBytesPerSecond / MB).ToString("0.0", CultureInfo.InvariantCulture));
        }

        var jobs = new Table().Border(TableBorder.Rounded).Title("jobs")
            .AddColumn("job")
            .AddColumn("tier")
            .AddColumn("nodes (weight)")
            .AddColumn(new TableColumn("sized for").RightAligned())
            .AddColumn(new TableColumn("objects").RightAligned())
            .AddColumn(new TableColumn("bytes").RightAligned())
            .AddColumn("bytes per tier");
        for (var i = 0; i < cluster.Jobs.Count; i++)
        {
            var job = cluster.Jobs[i];
            var usage = snapshot.Usages[i];
            jobs.AddRow(
                Markup.Escape(job.JobId),
                NodeTierNames.Name(job.Tier),
                string.Join(" ", job.Nodes.Select(n => string.Create(CultureInfo.InvariantCulture, $"{n.Id} ({n.Weight:0.##})"))),
                $"{Units.FormatBitsPerSecond(job.ThroughputBitsPerSecond)}, {Units.FormatBytes(job.CapacityBytes)}",
                usage?.Objects.ToString(CultureInfo.InvariantCulture) ?? "?",
                usage is null ? "?" : Units.FormatBytes(usage.BlockBytes + usage.InlineBytes),
                usage is null ? "?" : PerTier(usage));
        }

        var live = cluster.Nodes.Count(n => n.State == Protocol.NodeState.Live);
        var header = new Markup(Markup.Escape(string.Create(
            CultureInfo.InvariantCulture,
            $"controller {controller}, metadata {cluster.Metadata}: {live} live node{(live == 1 ? "" : "s")}, {cluster.Jobs.Count} job{(cluster.Jobs.Count == 1 ? "" : "s")}, {Units.FormatBytes(cluster.Nodes.Sum(n => n.Capacity.Used))} of {Units.FormatBytes(cluster.Nodes.Where(n => n.State == Protocol.NodeState.Live).Sum(n => n.Capacity.Total))} used ({snapshot.At.ToLocalTime():HH:mm:ss})")));
        IRenderable host = cluster.Host is { } budget ? new Markup(Markup.Escape("host: " + HostLine(budget))) : new Text(string.Empty);

        // Each server's jobs, request rate and CPU: one line, once there is more than the header's address to say.
        IRenderable servers = cluster.MetadataServers is { Count: > 0 } plane && (plane.Count > 1 || plane[0].Cpu is not null)
            ? new Markup(Markup.Escape((plane.Count > 1 ? "metadata servers: " : "metadata server: ") + string.Join(", ", plane.Select(s => s.Reachable
                ? string.Create(CultureInfo.InvariantCulture, $"{s.Address} ({(s.State is null or "serving" ? "" : s.State + ", ")}{s.Jobs} job{(s.Jobs == 1 ? "" : "s")}, {s.RequestsPerSecond:0.#} req/s{(s.Cpu is { } cpu ? $", cpu {Percent(cpu)} of a core" : "")})")
                : $"{s.Address} (unreachable: {s.Error})"))))
            : new Text(string.Empty);
        return new Rows(
            header,
            servers,
            host,
            cluster.Nodes.Count > 0 ? nodes : new Markup("no storage nodes"),
            cluster.Jobs.Count > 0 ? jobs : new Markup("no jobs"),
            RenderEvents(snapshot.Events));
    }

    /// <summary>
    /// One line on what the host has left for new nodes, as the local provisioner counts it before each start: e.g.
    /// "memory 17.2 GiB left for nodes (19.6 GiB available, 0 B promised to running nodes, 2.4 GiB kept); disk ...".
    /// </summary>
    internal static string HostLine(HostBudgetResponse budget)
    {
        var line = $"memory {Units.FormatBytes(budget.MemoryLeftBytes)} left for new nodes ({Units.FormatBytes(budget.MemoryAvailableBytes)} available, "
            + $"{Units.FormatBytes(budget.MemoryPromisedBytes)} promised to running nodes, {Units.FormatBytes(budget.MemoryReserveBytes)} kept for the host)";
        return budget.Directory is null
            ? line
            : line + $"; disk {Units.FormatBytes(budget.DiskLeftBytes)} left in {budget.Directory} ({Units.FormatBytes(budget.DiskFreeBytes)} free, "
                + $"{Units.FormatBytes(budget.DiskPromisedBytes)} promised, {Units.FormatBytes(budget.DiskReserveBytes)} kept)";
    }

    /// <summary>The last events: what the controller decided (scale-ups, drains, warm pool) and why.</summary>
    private static IRenderable RenderEvents(IReadOnlyList<EventResponse> events)
    {
        if (events.Count == 0)
        {
            return new Markup("no events");
        }

        var table = new Table().Border(TableBorder.Rounded).Title("recent events")
            .AddColumn("time")
            .AddColumn("event")
            .AddColumn(new TableColumn("node").RightAligned())
            .AddColumn("reason");
        foreach (var e in events)
        {
            var kind = Markup.Escape(e.Kind);
            table.AddRow(
                e.Time.ToLocalTime().ToString("HH:mm:ss", CultureInfo.InvariantCulture),
                e.Kind is "scale-failed" or "node-dead" or "pool-failed" or "pool-lost" ? $"[red]{kind}[/]" : kind,
                e.Node?.ToString(CultureInfo.InvariantCulture) ?? "",
                Markup.Escape(e.Reason));
        }

        return table;
    }

    /// <summary>"dram 2 MiB, ssd 6 MiB": the tiers holding the job's blocks (spilled data shows as a second tier).</summary>
    private static string PerTier(JobUsageResponse usage)
    {
        var parts = (usage.BytesByTier ?? new Dictionary<NodeTier, long>()).Where(t => t.Value > 0).OrderBy(t => t.Key).Select(t => $"{NodeTierNames.Name(t.Key)} {Units.FormatBytes(t.Value)}").ToList();
        return parts.Count == 0 ? "-" : string.Join(", ", parts);
    }

    private static string Percent(double fraction) => (fraction * 100).ToString("0.#", CultureInfo.InvariantCulture) + " %";

    private static JsonObject ToJson(Snapshot snapshot) => new()
    {
        ["metadata"] = snapshot.Cluster.Metadata,
        ["metadataServers"] = snapshot.Cluster.MetadataServers is { } servers
            ? new JsonArray([.. servers.Select(s => (JsonNode)new JsonObject { ["address"] = s.Address, ["reachable"] = s.Reachable, ["jobs"] = s.Jobs, ["requestsPerSecond"] = s.RequestsPerSecond, ["cpu"] = s.Cpu, ["hostCpu"] = s.HostCpu, ["serverRequestsPerSecond"] = s.ServerRequestsPerSecond, ["state"] = s.State, ["error"] = s.Error })])
            : null,
        ["at"] = snapshot.At,
        ["nodes"] = new JsonArray([.. snapshot.Cluster.Nodes.Select(n => (JsonNode)new JsonObject
        {
            ["id"] = n.Id,
            ["address"] = n.Address,
            ["tier"] = NodeTierNames.Name(n.Tier),
            ["state"] = n.State.ToString().ToLowerInvariant(),
            ["capacityBytes"] = n.Capacity.Total,
            ["usedBytes"] = n.Capacity.Used,
            ["allocatedShare"] = n.Allocated.Share,
            ["cpu"] = n.Cpu,
            ["netRxBytesPerSecond"] = n.Network.RxBytesPerSecond,
            ["netTxBytesPerSecond"] = n.Network.TxBytesPerSecond,
        })]),
        ["jobs"] = new JsonArray([.. snapshot.Cluster.Jobs.Select((j, i) => (JsonNode)new JsonObject
        {
            ["id"] = j.JobId,
            ["tier"] = NodeTierNames.Name(j.Tier),
            ["nodes"] = new JsonArray([.. j.Nodes.Select(n => (JsonNode)new JsonObject { ["id"] = n.Id, ["weight"] = n.Weight })]),
            ["throughputBitsPerSecond"] = j.ThroughputBitsPerSecond,
            ["capacityBytes"] = j.CapacityBytes,
            ["objects"] = snapshot.Usages[i]?.Objects,
            ["bytes"] = snapshot.Usages[i] is { } u ? u.BlockBytes + u.InlineBytes : null,
            ["bytesByTier"] = snapshot.Usages[i] is { } usage ? new JsonObject([.. (usage.BytesByTier ?? new Dictionary<NodeTier, long>()).OrderBy(t => t.Key).Select(t => KeyValuePair.Create(NodeTierNames.Name(t.Key), (JsonNode?)t.Value))]) : null,
        })]),
        ["events"] = new JsonArray([.. snapshot.Events.Select(e => (JsonNode)new JsonObject
        {
            ["time"] = e.Time,
            ["kind"] = e.Kind,
            ["node"] = e.Node,
            ["reason"] = e.Reason,
        })]),
    };

    private sealed record Snapshot(ClusterResponse Cluster, JobUsageResponse?[] Usages, DateTimeOffset At)
    {
        public IReadOnlyList<EventResponse> Events { get; init; } = [];
    }
}
