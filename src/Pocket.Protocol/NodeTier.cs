namespace Pocket.Protocol;

/// <summary>Storage tiers, fastest first. Numbers are part of the wire format.</summary>
public enum NodeTier : byte
{
    Dram = 1,
    Ssd = 2,
    Hdd = 3,
}

/// <summary>Node liveness as the metadata server sees it. Numbers are part of the wire format.</summary>
public enum NodeState : byte
{
    Live = 1,
    Draining = 2,
    Dead = 3,

    /// <summary>A drained node: it holds no live blocks and may be stopped.</summary>
    Drained = 4,

    /// <summary>
    /// A warm-pool node: registered and heartbeating but held out of placement (it receives no blocks) until the
    /// controller claims it with <see cref="Opcode.ActivateNode"/>.
    /// </summary>
    Standby = 5,

    /// <summary>
    /// A node that missed heartbeats for longer than the metadata server's suspect time but not yet its dead timeout:
    /// placement skips it and reads of its blocks get <see cref="Status.NodeUnavailable"/>; its next heartbeat makes it
    /// what it was before (its blocks intact). Only ever reported: the node keeps its own state underneath.
    /// </summary>
    Suspect = 6,
}

/// <summary>
/// The names of <see cref="NodeTier"/> as people, command lines, JSON and labels see them ("dram", "ssd", "hdd"): the
/// one place they are parsed and printed.
/// </summary>
public static class NodeTierNames
{
    /// <summary>Every tier, fastest first.</summary>
    public static IReadOnlyList<NodeTier> All { get; } = [NodeTier.Dram, NodeTier.Ssd, NodeTier.Hdd];

    /// <summary>The valid names, for errors and help: "dram, ssd, hdd".</summary>
    public static string List { get; } = string.Join(", ", All.Select(Name));

    /// <summary>The tier's name ("dram"); a number not in the enum prints as the number.</summary>
    public static string Name(this NodeTier tier) => tier switch
    {
        NodeTier.Dram => "dram",
        NodeTier.Ssd => "ssd",
        NodeTier.Hdd => "hdd",
        _ => ((byte)tier).ToString(System.Globalization.CultureInfo.InvariantCulture),
    };

    /// <summary>A tier from its name, ignoring case; numbers and unknown names are refused.</summary>
    public static bool TryParse(string? name, out NodeTier tier)
    {
        foreach (var candidate in All)
        {
            if (string.Equals(name?.Trim(), Name(candidate), StringComparison.OrdinalIgnoreCase))
            {
                tier = candidate;
                return true;
            }
        }

        tier = 0;
        return false;
    }

    /// <summary>The error for a name <see cref="TryParse"/> refused: "unknown tier 'tape' (tiers: dram, ssd, hdd)".</summary>
    public static string Unknown(string? name) => $"unknown tier '{name}' (tiers: {List})";
}
