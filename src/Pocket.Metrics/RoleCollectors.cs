using Pocket.Metadata;
using Pocket.Protocol;
using Prometheus;

namespace Pocket.Metrics;

/// <summary>
/// The state metrics of the binary-protocol roles, read from the role when Prometheus scrapes (a callback before each
/// collection), so they cost the request path nothing.
/// </summary>
public static class RoleCollectors
{
    private static readonly NodeState[] States = [NodeState.Live, NodeState.Draining, NodeState.Dead, NodeState.Drained, NodeState.Standby, NodeState.Suspect];

    /// <summary>Registers the metadata server's request metrics (returned, for its listener) and state metrics.</summary>
    public static FrameMetrics Metadata(CollectorRegistry registry, Func<MetadataServer?> server)
    {
        var requests = new FrameMetrics("metadata", registry);
        var factory = Prometheus.Metrics.WithCustomRegistry(registry);
        var jobs = factory.CreateGauge("pocket_metadata_jobs", "Jobs registered (including retired jobs whose keep-after-job objects still live).");
        var objects = factory.CreateGauge("pocket_metadata_objects", "Committed objects of every job.");
        var inline = factory.CreateGauge("pocket_metadata_inline_bytes", "Bytes of small objects kept inline in the metadata server.");
        var inlineCapacity = factory.CreateGauge("pocket_metadata_inline_capacity_bytes", "Bytes the metadata server may keep inline, at most.");
        var objectMemory = factory.CreateGauge("pocket_metadata_object_memory_bytes", "Memory counted for objects and open writes (keys, records, inline bytes) against the server's bound.");
        var objectMemoryBound = factory.CreateGauge("pocket_metadata_object_memory_limit_bytes", "The metadata server's bound on object memory; past it creates fail with QuotaExceeded.");
        var inlineSlots = factory.CreateGauge("pocket_metadata_inline_slot_bytes", "Bytes of inline slots (whole pages) holding objects above half a page.");
        var inlineFreeResident = factory.CreateGauge("pocket_metadata_inline_free_resident_bytes", "Bytes of free inline slots still in memory, reused by the next puts until a trim gives them back.");
        var inlineReleased = factory.CreateCounter("pocket_metadata_inline_released_bytes_total", "Bytes of free inline slots given back to the system since the server started.");
        var handles = factory.CreateGauge("pocket_metadata_open_handles", "Large puts and delete-after-read gets between their steps.");
        var connections = factory.CreateGauge("pocket_metadata_connections", "Open connections (clients, storage nodes, the controller).");
        var (pauses, stalled) = SlowReaders(factory, "metadata");
        var nodes = factory.CreateGauge("pocket_metadata_nodes", "Storage nodes by tier and state.", new GaugeConfiguration { LabelNames = ["tier", "state"] });
        var capacity = factory.CreateGauge("pocket_metadata_capacity_bytes", "Capacity of the nodes that are not dead, by tier.", new GaugeConfiguration { LabelNames = ["tier"] });
        var used = factory.CreateGauge("pocket_metadata_used_bytes", "Allocated bytes on the nodes that are not dead, by tier.", new GaugeConfiguration { LabelNames = ["tier"] });
        registry.AddBeforeCollectCallback(() =>
        {
            if (server() is not { } metadata)
            {
                return;
            }

            var snapshot = metadata.Snapshot();
            jobs.Set(snapshot.Jobs);
            objects.Set(snapshot.Objects);
            inline.Set(snapshot.InlineBytes);
            inlineCapacity.Set(snapshot.InlineCapacity);
            objectMemory.Set(snapshot.ObjectMemory);
            objectMemoryBound.Set(snapshot.MaxObjectMemory);
            inlineSlots.Set(snapshot.InlineSlotBytes);
            inlineFreeResident.Set(snapshot.InlineFreeResidentBytes);
            inlineReleased.IncTo(snapshot.InlineReleasedBytes);
            handles.Set(snapshot.OpenHandles);
            connections.Set(snapshot.Connections);
            pauses.IncTo(metadata.ReplyPauses);
            stalled.IncTo(metadata.StalledReaders);
            foreach (var tier in NodeTierNames.All)
            {
                var tierName = NodeTierNames.Name(tier);
                foreach (var state in States)
                {
                    nodes.WithLabels(tierName, StateName(state)).Set(snapshot.Nodes.Count(n => n.Tier == tier && n.State == state));
                }

                capacity.WithLabels(tierName).Set(snapshot.Nodes.Where(n => n.Tier == tier && n.State != NodeState.Dead).Sum(n => n.Capacity));
                used.WithLabels(tierName).Set(snapshot.Nodes.Where(n => n.Tier == tier && n.State != NodeState.Dead).Sum(n => n.Used));
            }
        });
        return requests;
    }

    /// <summary>Registers a storage node's request metrics (returned, for its listener) and state metrics.</summary>
    public static FrameMetrics Storage(CollectorRegistry registry, Func<StorageServer.StorageServer?> server)
    {
        var requests = new FrameMetrics("storage", registry);
        var factory = Prometheus.Metrics.WithCustomRegistry(registry);
        var info = factory.CreateGauge("pocket_storage_node_info", "1, labelled with the node's id (0 before it registers) and tier.", new GaugeConfiguration { LabelNames = ["node", "tier"] });
        var capacity = factory.CreateGauge("pocket_storage_capacity_bytes", "Bytes this node's device stores.");
        var written = factory.CreateCounter("pocket_storage_written_bytes_total", "Bytes written to the device.");
        var read = factory.CreateCounter("pocket_storage_read_bytes_total", "Bytes read from the device.");
        var received = factory.CreateCounter("pocket_storage_network_receive_bytes_total", "Bytes of request frames received.");
        var sent = factory.CreateCounter("pocket_storage_network_transmit_bytes_total", "Bytes of reply frames sent.");
        var cpu = factory.CreateGauge("pocket_storage_cpu_ratio", "CPU share of the node's process over the last heartbeat interval (0..1 of all cores).");
        var connections = factory.CreateGauge("pocket_storage_connections", "Open connections.");
        var (pauses, stalled) = SlowReaders(factory, "storage");
        string? infoNode = null;
        registry.AddBeforeCollectCallback(() =>
        {
            if (server() is not { } node)
            {
                return;
            }

            var id = node.NodeId.ToString(System.Globalization.CultureInfo.InvariantCulture);
            if (infoNode != id)
            {
                // A node that re-registers gets a new id: the old series goes, so only one is ever 1.
                if (infoNode is not null)
                {
                    info.RemoveLabelled(infoNode, NodeTierNames.Name(node.Tier));
                }

                infoNode = id;
            }

            info.WithLabels(id, NodeTierNames.Name(node.Tier)).Set(1);
            capacity.Set(node.Store.Capacity);
            written.IncTo(node.Store.BytesWritten);
            read.IncTo(node.Store.BytesRead);
            received.IncTo(node.BytesReceived);
            sent.IncTo(node.BytesSent);
            cpu.Set(node.CpuShare);
            connections.Set(node.ConnectionCount);
            pauses.IncTo(node.ReplyPauses);
            stalled.IncTo(node.StalledReaders);
        });
        return requests;
    }

    /// <summary>The listener's backpressure counters of a role: a client that lets its replies wait, and one that stopped reading.</summary>
    private static (Counter Pauses, Counter Stalled) SlowReaders(MetricFactory factory, string role) => (
        factory.CreateCounter($"pocket_{role}_reply_pauses_total", "Times a connection's requests were held back because more than the pause (1 MiB by default) of its replies waited unread."),
        factory.CreateCounter($"pocket_{role}_stalled_readers_total", "Connections closed because their peer read none of its waiting replies for the stall timeout (30 s by default)."));

    /// <summary>The label of a node state ("live", "draining", ...).</summary>
    public static string StateName(NodeState state) => state.ToString().ToLowerInvariant();
}
