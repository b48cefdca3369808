using System.Globalization;

namespace Pocket.Cli.Commands;

/// <summary>
/// The metadata plane `pocket controller` is given: servers that run already (--metadata), with spare places where it
/// may start more as local children (--metadata-spare), or, with --provisioner kubernetes and no --metadata, a plane of
/// pods the Kubernetes provisioner runs (--metadata-servers, --metadata-max).
/// </summary>
/// <param name="Addresses">The running servers' addresses; empty when the controller runs the plane.</param>
/// <param name="Spare">Where more servers may be started (local children).</param>
/// <param name="RunsPlane">The Kubernetes provisioner starts the plane's pods.</param>
/// <param name="Servers">Servers at start, the plane's minimum.</param>
/// <param name="Max">Most servers the plane may have.</param>
internal sealed record ControllerPlane(IReadOnlyList<string> Addresses, IReadOnlyList<string> Spare, bool RunsPlane, int Servers, int Max)
{
    /// <summary>Most metadata servers of one plane (job numbers are strided by the plane's size).</summary>
    public const int MostServers = 16;

    /// <summary>Reads the flags; throws <see cref="CliException"/> naming the flag that makes no sense.</summary>
    public static ControllerPlane Parse(string? metadata, string? spare, int? servers, int? max, string provisioner)
    {
        var addresses = Split("--metadata", metadata);
        var spares = Split("--metadata-spare", spare);
        if (addresses.Count == 0)
        {
            if (metadata is not null)
            {
                throw new CliException("--metadata needs at least one HOST:PORT");
            }

            if (provisioner != "kubernetes")
            {
                throw new CliException("--metadata is required (the metadata servers' HOST:PORT), except with --provisioner kubernetes, which runs the metadata plane as pods");
            }

            if (spares.Count > 0)
            {
                throw new CliException("--metadata-spare is for --provisioner local; the Kubernetes plane's servers are pods: give --metadata-max");
            }

            var start = servers ?? 1;
            if (start is < 1 or > MostServers)
            {
                throw new CliException(string.Create(CultureInfo.InvariantCulture, $"--metadata-servers must be between 1 and {MostServers}"));
            }

            var most = max ?? start;
            if (most < start || most > MostServers)
            {
                throw new CliException(string.Create(CultureInfo.InvariantCulture, $"--metadata-max must be between --metadata-servers ({start}) and {MostServers}"));
            }

            return new([], [], true, start, most);
        }

        if (servers is not null || max is not null)
        {
            throw new CliException($"--{(servers is not null ? "metadata-servers" : "metadata-max")} sizes the plane --provisioner kubernetes runs when no --metadata is given; with --metadata, give --metadata-spare");
        }

        if (spares.Count > 0 && provisioner != "local")
        {
            throw new CliException("--metadata-spare needs --provisioner local: the controller starts `pocket metadata` children at those addresses");
        }

        if (spares.FirstOrDefault(s => addresses.Contains(s, StringComparer.OrdinalIgnoreCase)) is { } both)
        {
            throw new CliException($"--metadata-spare: {both} is a running server (--metadata) already");
        }

        if (spares.Select(s => s[..s.LastIndexOf(':')]).Distinct(StringComparer.OrdinalIgnoreCase).Count() > 1)
        {
            throw new CliException("--metadata-spare: every spare address must be on this machine's one listening host (the controller starts them as its children)");
        }

        if (addresses.Count + spares.Count > MostServers)
        {
            throw new CliException(string.Create(CultureInfo.InvariantCulture, $"--metadata and --metadata-spare name {addresses.Count + spares.Count} servers; at most {MostServers}"));
        }

        return new(addresses, spares, false, addresses.Count, addresses.Count + spares.Count);
    }

    private static List<string> Split(string flag, string? list)
    {
        var addresses = (list ?? string.Empty).Split(',', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries).ToList();
        foreach (var address in addresses)
        {
            var colon = address.LastIndexOf(':');
            if (colon <= 0 || !int.TryParse(address.AsSpan(colon + 1), NumberStyles.None, CultureInfo.InvariantCulture, out var port) || port is <= 0 or > 65535)
            {
                throw new CliException($"{flag}: '{address}' is not HOST:PORT");
            }
        }

        if (addresses.Distinct(StringComparer.OrdinalIgnoreCase).Count() != addresses.Count)
        {
            throw new CliException($"{flag}: an address is named twice");
        }

        return addresses;
    }
}
