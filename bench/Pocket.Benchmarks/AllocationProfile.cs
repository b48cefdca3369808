using System.Diagnostics.Tracing;
using System.Globalization;
using System.Runtime.CompilerServices;
using Pocket.Admin;
using Pocket.Client;
using Pocket.Embedded;

namespace Pocket.Benchmarks;

/// <summary>
/// Which types a request allocates, not only how many bytes: runs puts, gets and lookups of 1 KiB against an
/// in-process cluster and samples the runtime's AllocationTick events (one per ~100 KB allocated, naming the
/// type that crossed the mark), next to the exact total from GC.GetTotalAllocatedBytes. Client and servers share
/// the process, so both sides count; the type names tell them apart.
///
///   dotnet run -c Release --project bench/Pocket.Benchmarks -- --allocations [OPS]
/// </summary>
internal static class AllocationProfile
{
    public static async Task<int> RunAsync(int ops)
    {
        await using var cluster = await PocketCluster.StartAsync(new PocketClusterOptions { StorageNodes = 1, NodeCapacity = 64L << 20, PreTouchMemory = false });
        await using var client = await cluster.ConnectAsync();
        var job = await cluster.Admin(client).RegisterJobAsync("allocations");
        var value = new byte[1 << 10];
        var buffer = new byte[1 << 10];
        await job.PutAsync("get/1k", value);
        var large = new byte[64 << 10];
        var largeBuffer = new byte[64 << 10];
        await job.PutAsync("get/64k", large);
        var keys = Enumerable.Range(0, ops).Select(i => $"put/{i}").ToArray();

        // The lambdas below use the pooling builder as the client does, so the profile counts the client, not itself.
        // Warm-up: JIT, tiering, pools and connections reach their steady state before anything is counted.
        for (var i = 0; i < 20_000; i++)
        {
            await job.GetAsync("get/1k", 0, buffer);
            await job.LookupAsync("get/1k");
            if (i % 10 == 0)
            {
                await job.GetAsync("get/64k", 0, largeBuffer);
                await job.PutAsync("put/64k", large);
                await job.DeleteAsync("put/64k");
            }
        }

        var paths = new (string Name, Func<int, ValueTask> Op)[]
        {
            ("PutAsync 1 KiB (new key each)", i => job.PutAsync(keys[i], value)),
            ("GetAsync 1 KiB into a buffer", [AsyncMethodBuilder(typeof(PoolingAsyncValueTaskMethodBuilder))] async ValueTask (int _) => await job.GetAsync("get/1k", 0, buffer)),
            ("LookupAsync", [AsyncMethodBuilder(typeof(PoolingAsyncValueTaskMethodBuilder))] async ValueTask (int _) => await job.LookupAsync("get/1k")),
            ("GetAsync 64 KiB (storage node) into a buffer", [AsyncMethodBuilder(typeof(PoolingAsyncValueTaskMethodBuilder))] async ValueTask (int _) => await job.GetAsync("get/64k", 0, largeBuffer)),
            ("PutAsync 64 KiB (storage node) then DeleteAsync", [AsyncMethodBuilder(typeof(PoolingAsyncValueTaskMethodBuilder))] async ValueTask (int _) =>
            {
                await job.PutAsync("put/64k", large);
                await job.DeleteAsync("put/64k");
            }),
        };
        foreach (var (name, op) in paths)
        {
            using var listener = new AllocationListener();
            var before = GC.GetTotalAllocatedBytes(precise: true);
            for (var i = 0; i < ops; i++)
            {
                await op(i);
            }

            var total = GC.GetTotalAllocatedBytes(precise: true) - before;
            listener.Dispose();
            Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"{name}: {total / (double)ops:0} bytes/op over {ops} ops (client and servers)"));
            var sampled = listener.Bytes.Values.Sum();
            foreach (var (type, bytes) in listener.Bytes.OrderByDescending(p => p.Value).Take(12))
            {
                Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"    {bytes * 100.0 / Math.Max(sampled, 1),5:0.0} %  ~{bytes * (double)total / Math.Max(sampled, 1) / ops,6:0} B/op  {type}"));
            }
        }

        return 0;
    }

    private sealed class AllocationListener : EventListener
    {
        private const EventKeywords GcKeyword = (EventKeywords)0x1;
        private readonly Lock _lock = new();

        public Dictionary<string, long> Bytes { get; } = new(StringComparer.Ordinal);

        protected override void OnEventSourceCreated(EventSource eventSource)
        {
            if (eventSource.Name == "Microsoft-Windows-DotNETRuntime")
            {
                EnableEvents(eventSource, EventLevel.Verbose, GcKeyword);
            }
        }

        protected override void OnEventWritten(EventWrittenEventArgs eventData)
        {
            if (eventData.EventName?.StartsWith("GCAllocationTick", StringComparison.Ordinal) != true || eventData.Payload is not { } payload)
            {
                return;
            }

            var names = eventData.PayloadNames!;
            var type = payload[names.IndexOf("TypeName")] as string ?? "?";
            var amountIndex = names.IndexOf("AllocationAmount64");
            var amount = amountIndex >= 0 ? Convert.ToInt64(payload[amountIndex], CultureInfo.InvariantCulture) : 100_000;
            lock (_lock)
            {
                Bytes[type] = Bytes.GetValueOrDefault(type) + amount;
            }
        }
    }
}
