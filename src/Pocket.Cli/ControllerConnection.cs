using Pocket.Client;
using Pocket.Controller.Contracts;

namespace Pocket.Cli;

/// <summary>
/// Which controller a client verb talks to: --controller, else $POCKET_CONTROLLER, else the controller in the
/// cluster.json that `pocket up` wrote. A metadata server named on purpose (--metadata or $POCKET_METADATA) with no
/// controller named is the older flow: the verbs then talk to that metadata server directly. Requests carry the
/// cluster token ($POCKET_CLUSTER_TOKEN, else cluster.json's) as the controller requires.
/// </summary>
internal sealed class ControllerConnection : IDisposable
{
    public const string Variable = "POCKET_CONTROLLER";

    private ControllerConnection(Uri url, string source, PocketHome home)
    {
        Url = url;
        Source = source;
        Client = new PocketControllerClient(url, new PocketControllerClientOptions { ClusterToken = ClusterConnection.ResolveToken(home), CertificateValidation = ClientTls.Validation(home) });
    }

    public Uri Url { get; }

    /// <summary>Where the URL came from, for error messages.</summary>
    public string Source { get; }

    public PocketControllerClient Client { get; }

    /// <summary>The text form users type and cluster.json holds: no trailing slash.</summary>
    public string Text => Url.ToString().TrimEnd('/');

    /// <summary>The controller to use, or null when none is configured (or a metadata server was named instead).</summary>
    public static ControllerConnection? TryResolve(string? controllerOption, string? metadataOption, PocketHome home)
    {
        if (!string.IsNullOrWhiteSpace(controllerOption))
        {
            return new ControllerConnection(ParseUrl(controllerOption, "--controller"), "--controller", home);
        }

        var fromEnvironment = Environment.GetEnvironmentVariable(Variable);
        if (!string.IsNullOrWhiteSpace(fromEnvironment))
        {
            return new ControllerConnection(ParseUrl(fromEnvironment, Variable), Variable, home);
        }

        if (!string.IsNullOrWhiteSpace(metadataOption) || !string.IsNullOrWhiteSpace(Environment.GetEnvironmentVariable(ClusterConnection.MetadataVariable)))
        {
            return null;
        }

        return home.ReadCluster() is { Controller: { Length: > 0 } url }
            ? new ControllerConnection(ParseUrl(url, home.ClusterFile), home.ClusterFile, home)
            : null;
    }

    public static ControllerConnection Resolve(string? controllerOption, PocketHome home) =>
        TryResolve(controllerOption, metadataOption: null, home)
        ?? throw new CliException($"no controller: start a cluster with `pocket up` (or pass --controller URL, or set {Variable})");

    /// <summary>"http://host:port", or "host:port" to which http:// is added.</summary>
    public static Uri ParseUrl(string text, string source)
    {
        var trimmed = text.Trim();
        if (!trimmed.Contains("://", StringComparison.Ordinal))
        {
            trimmed = "http://" + trimmed;
        }

        return Uri.TryCreate(trimmed, UriKind.Absolute, out var url) && (url.Scheme == Uri.UriSchemeHttp || url.Scheme == Uri.UriSchemeHttps)
            ? url
            : throw new CliException($"'{text}' (from {source}) is not a controller URL such as http://127.0.0.1:7080");
    }

    /// <summary>Runs a controller call; an unreachable controller becomes advice on where its URL came from.</summary>
    public async Task<T> CallAsync<T>(Func<PocketControllerClient, Task<T>> call)
    {
        try
        {
            return await call(Client).ConfigureAwait(false);
        }
        catch (PocketControllerException ex) when (ex.HttpStatus == System.Net.HttpStatusCode.Unauthorized)
        {
            throw new CliException($"the controller at {Text} refused the cluster token: {ex.Message}; set {ClusterConnection.TokenVariable} to the cluster's token", ex);
        }
        catch (PocketControllerException ex) when (ex.HttpStatus is null)
        {
            var hint = Source.EndsWith("cluster.json", StringComparison.Ordinal)
                ? $"; is `pocket up` still running? (delete {Source} if not)"
                : $" (from {Source})";
            throw new CliException($"{ex.Message}{hint}", ex);
        }
    }

    public void Dispose() => Client.Dispose();
}
