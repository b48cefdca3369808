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
}
