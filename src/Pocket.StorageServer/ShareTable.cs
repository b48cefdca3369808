using System.Numerics;

namespace Pocket.StorageServer;

/// <summary>
/// Which metadata server holds each of a node's 64 segments (the unit of a storage share). The node is the one place
/// that knows every share and the only one that moves segments, so a segment can never be held by two servers: giving a
/// server a segment another holds throws. Not thread-safe; the node changes it from its registration loop only.
/// </summary>
internal sealed class ShareTable(int servers)
{
    public const int Segments = 64;

    private readonly ulong[] _held = new ulong[servers];

    public int Servers => _held.Length;

    /// <summary>The segments <paramref name="server"/> holds.</summary>
    public ulong Held(int server) => _held[server];

    /// <summary>Segments no server holds (their holder died and nobody took them yet).</summary>
    public ulong Unowned
    {
        get
        {
            ulong owned = 0;
            foreach (var held in _held)
            {
                owned |= held;
            }

            return ~owned;
        }
    }

    /// <summary>The server holding <paramref name="segment"/>, or -1.</summary>
    public int OwnerOf(int segment)
    {
        for (var server = 0; server < _held.Length; server++)
        {
            if ((_held[server] & (1UL << segment)) != 0)
            {
                return server;
            }
        }

        return -1;
    }

    /// <summary>Gives unowned segments to a server; a segment another server holds is refused (a bug, not a race).</summary>
    public void Give(int server, ulong mask)
    {
        if ((mask & ~Unowned) != 0)
        {
            throw new InvalidOperationException($"segments 0x{mask & ~Unowned:x16} are already held: a segment is never given to two metadata servers");
        }

        _held[server] |= mask;
    }

    /// <summary>Takes segments back from the server that holds them.</summary>
    public void Take(int server, ulong mask)
    {
        if ((_held[server] & mask) != mask)
        {
            throw new InvalidOperationException($"server {server} does not hold segments 0x{mask & ~_held[server]:x16}");
        }

        _held[server] &= ~mask;
    }

    /// <summary>Server <paramref name="index"/>'s part of an even first split of the segments over <paramref name="of"/> servers: a contiguous run.</summary>
    public static ulong Run(int index, int of)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(index);
        ArgumentOutOfRangeException.ThrowIfGreaterThanOrEqual(index, of);
        var first = index * Segments / of;
        var end = (index + 1) * Segments / of;
        ulong mask = 0;
        for (var segment = first; segment < end; segment++)
        {
            mask |= 1UL << segment;
        }

        return mask;
    }

    /// <summary>The lowest <paramref name="count"/> segments of <paramref name="mask"/>.</summary>
    public static ulong Pick(ulong mask, int count)
    {
        ulong picked = 0;
        for (; mask != 0 && count > 0; mask &= mask - 1, count--)
        {
            picked |= mask & (~mask + 1);
        }

        return picked;
    }

    public static int Count(ulong mask) => BitOperations.PopCount(mask);
}
