using Pocket.Admin;
using Pocket.Client;
using Pocket.Embedded;

namespace Pocket.Tests;

public sealed class FrameConnectionTests
{
    /// <summary>
    /// Replies complete callers inline on the connection's reader thread. A caller that blocks in its
    /// continuation on another request of the same connection must not deadlock the connection.
    /// </summary>
    [Fact]
    public async Task ABlockingContinuationDoesNotStallTheConnection()
    {
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(60));
        await using var cluster = await PocketCluster.StartAsync(new PocketClusterOptions { StorageNodes = 1, NodeCapacity = 16 << 20, PreTouchMemory = false });
        await using var client = await cluster.ConnectAsync();
        var job = await client.Admin().RegisterJobAsync("blocking");
        await job.PutAsync("a", new byte[] { 1 });
        await job.PutAsync("b", new byte[] { 2 });

        // The reply can arrive before the caller awaits it, and then the continuation runs on the caller's thread,
        // not the reader's: try until one ran on the reader thread (each attempt must be right either way).
        var onReader = 0;
        for (var attempt = 0; attempt < 200 && onReader < 3; attempt++)
        {
            var result = await job.GetAsync("a", cancellationToken: timeout.Token).AsTask().ContinueWith(
                first =>
                {
                    // Sync-over-async inside a continuation that runs on the reader thread: only the watchdog's
                    // hand-over to a new reader lets the second reply arrive.
                    var thread = Thread.CurrentThread.Name ?? string.Empty;
                    var second = job.GetAsync("b").AsTask().Result;
                    return (Sum: first.Result[0] + second[0], Thread: thread);
                },
                timeout.Token,
                TaskContinuationOptions.ExecuteSynchronously,
                TaskScheduler.Default).WaitAsync(timeout.Token);

            Assert.Equal(3, result.Sum);
            if (result.Thread.StartsWith("pocket reader", StringComparison.Ordinal))
            {
                onReader++;
            }
        }

        Assert.True(onReader > 0, "no continuation ran on the reader thread in 200 attempts");
        Assert.Equal(2, await job.CountAsync(cancellationToken: timeout.Token));
    }
}
