using System.Buffers.Binary;
using Pocket.Client;
using static Pocket.Tests.TestSupport;

namespace Pocket.Tests;

/// <summary>
/// Inline slots reused under load over real sockets: clients on both event loops put, get, delete and take
/// (delete-after-read) 64 KiB objects of their own at once, so freed slots are taken by other objects while replies of
/// the old ones may still be sending; every get must return exactly the bytes of the object it named.
/// </summary>
public sealed class InlineReuseTests
{
    private const int Size = 64 << 10;

    /// <summary>The bytes of <paramref name="key"/>'s <paramref name="generation"/>-th put: the key's number and the generation, then bytes drawn from both.</summary>
    private static byte[] Content(int key, int generation)
    {
        var data = RandomBytes(Size, (key * 100_003) + generation);
        BinaryPrimitives.WriteInt32LittleEndian(data, key);
        BinaryPrimitives.WriteInt32LittleEndian(data.AsSpan(4), generation);
        return data;
    }

    /// <summary>Null when <paramref name="data"/> is a whole put of <paramref name="key"/>; otherwise what is wrong with it.</summary>
    private static string? Mismatch(int key, byte[] data)
    {
        if (data.Length != Size)
        {
            return $"key {key}: {data.Length} bytes";
        }

        var owner = BinaryPrimitives.ReadInt32LittleEndian(data);
        var generation = BinaryPrimitives.ReadInt32LittleEndian(data.AsSpan(4));
        if (owner != key)
        {
            return $"key {key}: got the bytes of key {owner}";
        }

        return data.AsSpan().SequenceEqual(Content(key, generation)) ? null : $"key {key}: generation {generation}'s bytes are not its own";
    }

    [Fact]
    public async Task ConcurrentDeletesAndPutsNeverChangeTheBytesAGetReturns()
    {
        const int Clients = 4;
        const int KeysPerClient = 6;
        const int Rounds = 250;
        await using var cluster = await StartClusterAsync(nodes: 1, capacity: 16L << 20, configure: o => o with { MaxObjectMemory = 64L << 20 });
        using var cts = Timeout(180);
        var clients = new List<PocketClient>();
        for (var i = 0; i < Clients; i++)
        {
            clients.Add(await cluster.ConnectAsync(new PocketClientOptions { SmallObjectThreshold = Size }, cts.Token));
        }

        try
        {
            var job = await cluster.Admin(clients[0]).RegisterJobAsync("reuse", cts.Token);
            var jobs = clients.Select(c => c.OpenJob(job.Id, job.Token)).ToList();
            var problems = new System.Collections.Concurrent.ConcurrentQueue<string>();
            var read = 0;
            await Task.WhenAll(Enumerable.Range(0, Clients).Select(c => Task.Run(async () =>
            {
                var mine = Enumerable.Range(c * KeysPerClient, KeysPerClient).ToArray();
                var generations = new int[KeysPerClient];
                var random = new Random(c);
                for (var round = 0; round < Rounds; round++)
                {
                    var slot = random.Next(KeysPerClient);
                    var key = mine[slot];
                    await jobs[c].PutAsync($"k{key}", Content(key, ++generations[slot]), cancellationToken: cts.Token);

                    // Any client's key: absent, or exactly one of its puts.
                    var any = random.Next(Clients * KeysPerClient);
                    try
                    {
                        if (Mismatch(any, await jobs[c].GetAsync($"k{any}", cancellationToken: cts.Token)) is { } wrong)
                        {
                            problems.Enqueue(wrong);
                        }

                        Interlocked.Increment(ref read);
                    }
                    catch (ObjectNotFoundException)
                    {
                    }

                    // The own key goes again, by delete or by a delete-after-read get, so its slot is reused at once.
                    if (round % 2 == 0)
                    {
                        Assert.Equal(1, await jobs[c].DeleteAsync($"k{key}", cancellationToken: cts.Token));
                    }
                    else if (Mismatch(key, await jobs[c].GetAsync($"k{key}", GetFlags.DeleteAfterRead, cts.Token)) is { } wrong)
                    {
                        problems.Enqueue(wrong);
                    }
                }
            }, cts.Token)));

            Assert.Empty(problems);
            Assert.True(read > 0);
            Assert.Equal(0, cluster.Metadata.Snapshot().InlineBytes);
        }
        finally
        {
            foreach (var client in clients)
            {
                await client.DisposeAsync();
            }
        }
    }
}
