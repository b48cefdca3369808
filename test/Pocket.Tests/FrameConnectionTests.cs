using Pocket.Client;
using Pocket.Testing;

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
        var job = await client.RegisterJobAsync("blocking");
        await job.PutAsync("a", new byte[] { 1 });
        await job.PutAsync("b", new byte[] { 2 });

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
        Assert.StartsWith("pocket reader", result.Thread, StringComparison.Ordinal);
        Assert.Equal(2, await job.CountAsync(cancellationToken: timeout.Token));
    }
}
