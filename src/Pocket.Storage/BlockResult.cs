namespace Pocket.Storage;

/// <summary>What a <see cref="BlockStore"/> write claim or read found; the storage server maps it to a wire status.</summary>
public enum BlockResult
{
    /// <summary>The blocks hold the caller's generation (a read) or are now claimed for it (a write).</summary>
    Ok,

    /// <summary>A newer allocation owns a block, another write is under way, or the generation is not the caller's.</summary>
    Stale,
}
