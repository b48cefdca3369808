using System.Globalization;
using StackExchange.Redis;

namespace Pocket.LoadGenerator;

/// <summary>
/// How values go to a RESP server (Redis, Garnet) when they are too big for one SET: values over
/// <see cref="ChunkSize"/> (half of Redis' default proto-max-bulk-len) are split into key:chunk0, key:chunk1, ...,
/// each at most <see cref="ChunkSize"/>. Shared by the bench's RESP target and the sort's RESP store.
/// </summary>
internal static class RespChunks
{
    public const int ChunkSize = 256 << 20;

    /// <summary>Chunks a value of <paramref name="length"/> bytes is split into; 0 when it is stored whole.</summary>
    public static int Count(long length) => length <= ChunkSize ? 0 : (int)((length + ChunkSize - 1) / ChunkSize);

    /// <summary>The key of chunk <paramref name="n"/> of <paramref name="key"/> under <paramref name="root"/>.</summary>
    public static RedisKey Key(string root, string key, int n) => string.Create(CultureInfo.InvariantCulture, $"{root}{key}:chunk{n}");

    /// <summary>
    /// Starts one SET per chunk of <paramref name="value"/> (<see cref="Count"/> of them) and returns them unawaited: the
    /// multiplexer pipelines them on its one connection. <paramref name="written"/> sees each key first.
    /// </summary>
    public static List<Task> Set(IDatabase database, string root, string key, ReadOnlyMemory<byte> value, Action<RedisKey>? written = null)
    {
        var sets = new List<Task>(Count(value.Length) + 1);
        for (var (offset, n) = (0, 0); offset < value.Length; offset += ChunkSize, n++)
        {
            var chunkKey = Key(root, key, n);
            written?.Invoke(chunkKey);
            sets.Add(database.StringSetAsync(chunkKey, value.Slice(offset, Math.Min(ChunkSize, value.Length - offset))));
        }

        return sets;
    }
}
