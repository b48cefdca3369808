using Pocket.Admin;

namespace Pocket.Controller.Jobs;

/// <summary>What the controller reads of one metadata server's load when it places a job.</summary>
/// <param name="Jobs">The controller's live jobs on it.</param>
/// <param name="Requests">Requests those jobs made, as of the last lease check.</param>
internal readonly record struct MetadataLoad(int Jobs, long Requests);

/// <summary>
/// The metadata servers the controller places jobs on (docs/architecture.md, "Several metadata servers"). The first is
/// the one telemetry, autoscaling and drains read; every storage node serves all of them, so node ids agree.
/// </summary>
internal sealed class MetadataPlane(IReadOnlyList<PocketAdminClient> servers)
{
    public IReadOnlyList<PocketAdminClient> Servers { get; } = servers.Count > 0 ? servers : throw new ArgumentException("a metadata plane needs a server");

    public PocketAdminClient Primary => Servers[0];

    private readonly HashSet<string> _down = new(StringComparer.OrdinalIgnoreCase);

    /// <summary>False while <paramref name="server"/> is lost and not yet replaced: no job is placed on it.</summary>
    public bool IsUp(PocketAdminClient server)
    {
        lock (_down)
        {
            return !_down.Contains(server.MetadataAddress);
        }
    }

    /// <summary>Marks the server at <paramref name="address"/> lost (<paramref name="up"/> false) or serving again.</summary>
    public void SetUp(string address, bool up)
    {
        lock (_down)
        {
            if (up)
            {
                _down.Remove(address);
            }
            else
            {
                _down.Add(address);
            }
        }
    }

    /// <summary>The server at <paramref name="address"/> (a job's); the primary for null (a job registered before the plane had several).</summary>
    public PocketAdminClient For(string? address)
    {
        if (address is null)
        {
            return Primary;
        }

        foreach (var server in Servers)
        {
            if (server.MetadataAddress == address)
            {
                return server;
            }
        }

        return Primary;
    }

    /// <summary>
    /// The server a new job goes to: the one with the fewest live jobs, then the fewest requests from them, then the
    /// first. CPU is not read: metadata servers do not report theirs yet.
    /// </summary>
    public static int Choose(IReadOnlyList<MetadataLoad> load)
    {
        var best = 0;
        for (var i = 1; i < load.Count; i++)
        {
            if (load[i].Jobs < load[best].Jobs || (load[i].Jobs == load[best].Jobs && load[i].Requests < load[best].Requests))
            {
                best = i;
            }
        }

        return best;
    }
}
