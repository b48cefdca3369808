using Pocket.Protocol;
using Pocket.Storage;
using Pocket.StorageServer;

namespace Pocket.Tests;

/// <summary>The block store's rules for sealed and forgotten blocks (what RevokeExtents leaves behind on a node).</summary>
public sealed class BlockStoreSealTests
{
    private const int Block = 64 << 10;

    private static BlockStore NewStore() => new(BlockDevices.Create(NodeTier.Dram, 16L * Block), Block);

    private static BlockResult Write(BlockStore store, long offset, int length, uint generation)
    {
        var result = store.BeginWrite(offset, length, generation);
        if (result == BlockResult.Ok)
        {
            store.EndWrite(offset, length, generation);
        }

        return result;
    }

    [Fact]
    public void ASealedBlockIsReadableButNotWritableByItsGeneration()
    {
        using var store = NewStore();
        Assert.Equal(BlockResult.Ok, Write(store, 0, 2 * Block, 5));
        store.Seal(0, 2 * Block, 5);

        Assert.Equal(BlockResult.Stale, Write(store, 0, 100, 5));
        Assert.Equal(BlockResult.Stale, Write(store, Block, 100, 5));
        Assert.Equal(BlockResult.Stale, Write(store, 0, 100, 4));
        Assert.Equal(BlockResult.Ok, store.Read(0, new byte[2 * Block], 5));

        // Space freed and given to a newer allocation is writable by it, and only by it.
        Assert.Equal(BlockResult.Ok, Write(store, 0, 100, 6));
        Assert.Equal(BlockResult.Stale, store.Read(0, new byte[100], 5));
    }

    [Fact]
    public void SealingStampsBlocksTheWriterNeverWrote()
    {
        using var store = NewStore();
        Assert.Equal(BlockResult.Ok, Write(store, 0, 100, 5));
        store.Seal(0, 3 * Block, 5);

        // Block 2 was never written: the write grant cannot fill it in after Commit.
        Assert.Equal(BlockResult.Stale, Write(store, 2 * Block, 100, 5));
        Assert.Equal(BlockResult.Ok, Write(store, 2 * Block, 100, 6));
    }

    [Fact]
    public void AForgottenBlockAnswersNeitherReadsNorWritesOfItsGeneration()
    {
        using var store = NewStore();
        Assert.Equal(BlockResult.Ok, Write(store, 0, Block, 5));
        store.Forget(0, 2 * Block, 5);

        Assert.Equal(BlockResult.Stale, store.Read(0, new byte[100], 5));
        Assert.Equal(BlockResult.Stale, Write(store, 0, 100, 5));
        Assert.Equal(BlockResult.Stale, Write(store, Block, 100, 5));

        // A seal after the forget (a late, reordered message) does not bring the blocks back.
        store.Seal(0, Block, 5);
        Assert.Equal(BlockResult.Stale, store.Read(0, new byte[100], 5));
        Assert.Equal(BlockResult.Ok, Write(store, 0, Block, 7));
        Assert.Equal(BlockResult.Ok, store.Read(0, new byte[100], 7));
    }

    [Fact]
    public void ALateSealOrForgetLeavesANewerAllocationAlone()
    {
        using var store = NewStore();
        Assert.Equal(BlockResult.Ok, Write(store, 0, Block, 9));
        store.Seal(0, Block, 5);
        store.Forget(0, Block, 5);
        Assert.Equal(BlockResult.Ok, store.Read(0, new byte[100], 9));
        Assert.Equal(BlockResult.Ok, Write(store, 0, 100, 9));
    }

    [Fact]
    public void AWriteUnderWayWhenItsBlocksAreSealedEndsAndLeavesThemSealed()
    {
        using var store = NewStore();
        Assert.Equal(BlockResult.Ok, store.BeginWrite(0, 100, 5));
        store.Seal(0, Block, 5);
        store.EndWrite(0, 100, 5);
        Assert.Equal(BlockResult.Ok, store.Read(0, new byte[100], 5));
        Assert.Equal(BlockResult.Stale, Write(store, 0, 100, 5));
    }
}
