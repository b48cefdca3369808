using Pocket.Admin;
using Pocket.Client;
using static Pocket.Tests.TestSupport;

namespace Pocket.Tests;

/// <summary>
/// A whole get of an inline object (into a new array, a stream or a file) reads a reply longer than its pooled reply
/// buffer into an array of just the object's bytes, its kind and size into the buffer (see
/// <c>FrameConnection.SendAsync</c>'s reply head): sizes on both sides of the buffer's end, and ranges of such objects,
/// must come back exactly.
/// </summary>
public sealed class WholeInlineGetTests
{
    // The whole get's reply buffer is rented from the shared pool for 16 KiB + 64 bytes: a 32 KiB array. An inline
    // reply is 9 bytes (kind, size) and the object's.
    [Theory]
    [InlineData(1)]
    [InlineData((32 << 10) - 9)]
    [InlineData((32 << 10) - 8)]
    [InlineData(40_000)]
    [InlineData(64 << 10)]
    public async Task WholeGetsOfInlineObjectsReturnTheirBytes(int size)
    {
        await using var cluster = await StartClusterAsync(nodes: 0);
        await using var client = await cluster.ConnectAsync();
        var job = await cluster.Admin(client).RegisterJobAsync("whole-inline");
        var value = RandomBytes(size, size);
        await job.PutAsync("k", value);
        Assert.True((await job.LookupAsync("k"))!.Inline, "the object is inline");

        Assert.Equal(value, await job.GetAsync("k"));

        using var stream = new MemoryStream();
        await job.GetAsync("k", stream);
        Assert.Equal(value, stream.ToArray());

        // A range from the middle to the end, and one inside: the reply's size is the object's, its bytes the range's.
        var offset = size / 3;
        using var tail = new MemoryStream();
        await job.GetAsync("k", tail, offset);
        Assert.Equal(value.AsSpan(offset).ToArray(), tail.ToArray());

        var length = (size - offset) / 2;
        using var middle = new MemoryStream();
        await job.GetAsync("k", middle, offset, length);
        Assert.Equal(value.AsSpan(offset, length).ToArray(), middle.ToArray());

        var file = Path.Combine(Path.GetTempPath(), $"pocket-whole-inline-{Guid.NewGuid():N}");
        try
        {
            await job.GetFileAsync("k", file);
            Assert.Equal(value, await File.ReadAllBytesAsync(file));
        }
        finally
        {
            File.Delete(file);
        }

        // Taken by a delete-after-read whole get: the bytes once, then the key is gone.
        Assert.Equal(value, await job.GetAsync("k", GetFlags.DeleteAfterRead));
        await Assert.ThrowsAsync<ObjectNotFoundException>(async () => await job.GetAsync("k"));
    }
}
