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

    /// <summary>Segments one balancing round moves at most: shares follow jobs over seconds, never in one jump.</summary>
    public const int MaxMove = 8;

    /// <summary>What every server keeps at least while the node balances by demand, so an idle server can still place a new job.</summary>
    public static int MinSegments(int servers) => Math.Max(2, Segments / (4 * Math.Max(1, servers)));

    /// <summary>
    /// How many segments each server should hold, from what each uses and wants (in segments). When nobody wants
    /// anything the split is even, as at registration. Otherwise each gets what it uses plus what it wants (at least
    /// <see cref="MinSegments"/>) and the spare is split evenly; when that is more than the node has, each keeps what
    /// it uses, topped up to the minimum while there is room, and the rest goes by what each wants.
    /// </summary>
    public static int[] Targets(IReadOnlyList<(int Used, int Wanted)> demand)
    {
        var n = demand.Count;
        var targets = new int[n];
        if (n == 0)
        {
            return targets;
        }

        long wanted = demand.Sum(d => (long)d.Wanted);
        if (wanted == 0)
        {
            for (var i = 0; i < n; i++)
            {
                targets[i] = (Segments / n) + (i < Segments % n ? 1 : 0);
            }

            return targets;
        }

        var min = MinSegments(n);
        var need = demand.Select(d => Math.Max(min, (int)Math.Min(Segments, (long)d.Used + d.Wanted))).ToArray();
        if (need.Sum() <= Segments)
        {
            var spare = Segments - need.Sum();
            for (var i = 0; i < n; i++)
            {
                targets[i] = need[i] + (spare / n) + (i < spare % n ? 1 : 0);
            }

            return targets;
        }

        // Over-subscribed: what each uses first, then each is topped up to the minimum while the node has room.
        var rest = Segments;
        for (var i = 0; i < n; i++)
        {
            targets[i] = Math.Clamp(demand[i].Used, 0, rest);
            rest -= targets[i];
        }

        for (var i = 0; i < n; i++)
        {
            var top = Math.Min(rest, Math.Max(0, min - targets[i]));
            targets[i] += top;
            rest -= top;
        }

        if (rest > 0)
        {
            var given = 0;
            for (var i = 0; i < n; i++)
            {
                var part = (int)(rest * (double)demand[i].Wanted / wanted);
                targets[i] += part;
                given += part;
            }

            // Rounding leftovers go to the servers that want the most.
            foreach (var i in Enumerable.Range(0, n).OrderByDescending(i => demand[i].Wanted).Take(rest - given))
            {
                targets[i]++;
            }
        }

        return targets;
    }

    /// <summary>
    /// The one move of a balancing round: from the server furthest over its target to the one furthest under it, at
    /// most <see cref="MaxMove"/> segments; null when every server is at its target.
    /// </summary>
    public static (int From, int To, int Count)? PlanMove(IReadOnlyList<int> held, IReadOnlyList<int> targets)
    {
        int from = -1, to = -1, surplus = 0, deficit = 0;
        for (var i = 0; i < held.Count; i++)
        {
            if (held[i] - targets[i] > surplus)
            {
                (from, surplus) = (i, held[i] - targets[i]);
            }

            if (targets[i] - held[i] > deficit)
            {
                (to, deficit) = (i, targets[i] - held[i]);
            }
        }

        return from < 0 || to < 0 ? null : (from, to, Math.Min(MaxMove, Math.Min(surplus, deficit)));
    }
}
