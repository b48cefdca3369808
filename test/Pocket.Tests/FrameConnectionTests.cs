using System.Diagnostics;
using Pocket.Admin;
using Pocket.Client;
using Pocket.Embedded;
using Pocket.Networking;
using Pocket.Protocol;
using static Pocket.Tests.TestSupport;

namespace Pocket.Tests;

public sealed class FrameConnectionTests
{
    /// <summary>
    /// Replies complete callers inline on a client loop thread. A caller that blocks in its continuation on another
    /// request of the same connection must not deadlock the connection (nor the loops).
    /// </summary>
    [Fact]
    public async Task ABlockingContinuationDoesNotStallTheConnection()
    {
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(60));
        await using var cluster = await PocketCluster.StartAsync(new PocketClusterOptions { StorageNodes = 1, NodeCapacity = 16 << 20, PreTouchMemory = false });
        await using var client = await cluster.ConnectAsync();
        var job = await cluster.Admin(client).RegisterJobAsync("blocking");
        await job.PutAsync("a", new byte[] { 1 });
        await job.PutAsync("b", new byte[] { 2 });

        // The reply can arrive before the caller awaits it, and then the continuation runs on the caller's thread,
        // not a loop's: try until one ran on a loop (each attempt must be right either way).
        var onReader = 0;
        for (var attempt = 0; attempt < 200 && onReader < 3; attempt++)
        {
            var result = await job.GetAsync("a", cancellationToken: timeout.Token).AsTask().ContinueWith(
                first =>
                {
                    // Sync-over-async inside a continuation that runs on a client loop: only the watchdog's hand-over
                    // of the connection to another loop lets the second reply arrive.
                    var thread = Thread.CurrentThread.Name ?? string.Empty;
                    var second = job.GetAsync("b").AsTask().Result;
                    return (Sum: first.Result[0] + second[0], Thread: thread);
                },
                timeout.Token,
                TaskContinuationOptions.ExecuteSynchronously,
                TaskScheduler.Default).WaitAsync(timeout.Token);

            Assert.Equal(3, result.Sum);
            if (result.Thread.StartsWith("pocket client loop", StringComparison.Ordinal))
            {
                onReader++;
            }
        }

        Assert.True(onReader > 0, "no continuation ran on a client loop in 200 attempts");
        Assert.Equal(2, await job.CountAsync(cancellationToken: timeout.Token));
    }

    /// <summary>
    /// Plain connections are read by the process's few client loops, not by a thread each (a function talking to many
    /// nodes, or a fan-in benchmark, held a thread per connection): a thousand of them, each with a request answered.
    /// </summary>
    [Fact]
    public async Task AThousandPlainConnectionsAreReadWithoutAThreadEach()
    {
        const int count = 1_000;
        await using var cluster = await StartClusterAsync(nodes: 0);
        await using var client = await cluster.ConnectAsync();
        var job = await cluster.Admin(client).RegisterJobAsync("loops");
        var data = DataFor("k", 1024);
        await job.PutAsync("k", data);
        var get = new BodyWriter().Str("k").I64(0).I64(-1).ToArray();
        var threadsBefore = Process.GetCurrentProcess().Threads.Count;
        var connections = new List<FrameConnection>();
        try
        {
            for (var i = 0; i < count; i++)
            {
                connections.Add(await FrameConnection.ConnectAsync("127.0.0.1", cluster.Metadata.EndPoint.Port, new FrameConnectionOptions()));
            }

            var replies = await Task.WhenAll(connections.Select(c => c.SendAsync(Opcode.Get, FrameFlags.None, job.Token, get).AsTask()));
            Assert.All(replies, r => Assert.Equal(Status.Ok, r.Status));
            Assert.All(replies, r => Assert.Equal(data, r.Body[^data.Length..]));

            // A thread per connection would have added a thousand.
            var threads = Process.GetCurrentProcess().Threads.Count;
            Assert.True(threads - threadsBefore < 300, $"threads grew from {threadsBefore} to {threads} with {count} client connections");
        }
        finally
        {
            foreach (var connection in connections)
            {
                await connection.DisposeAsync();
            }
        }

        // The connections closed and left the loops; the client's own connection, on the same loops, is still served.
        Assert.Equal(data, await job.GetAsync("k"));
    }
}
