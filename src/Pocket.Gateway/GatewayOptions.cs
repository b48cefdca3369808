using System.Net;
using System.Security.Cryptography.X509Certificates;
using Pocket.Client;
using Pocket.Controller.Contracts;
using Pocket.Protocol;

namespace Pocket.Gateway;

/// <summary>Settings of the <see cref="GatewayServer"/>.</summary>
public sealed record GatewayOptions
{
    /// <summary>The controller's HTTP API, e.g. http://127.0.0.1:7070; buckets are registered and deregistered there.</summary>
    public required Uri ControllerUrl { get; init; }

    /// <summary>The metadata server, host:port. Null asks the controller (<c>GET /v1/cluster</c>) at start.</summary>
    public string? MetadataAddress { get; init; }

    /// <summary>Where the S3 endpoint listens; loopback on a free port by default (see <see cref="GatewayServer.Url"/>).</summary>
    public IPEndPoint Listen { get; init; } = new(IPAddress.Loopback, 0);

    /// <summary>Serve HTTPS with this certificate instead of plain HTTP.</summary>
    public X509Certificate2? Certificate { get; init; }

    /// <summary>
    /// How an https:// controller's certificate is checked (a private CA, or the self-signed set of
    /// <c>pocket up --tls</c>); null: against the system's trusted roots.
    /// </summary>
    public System.Net.Security.RemoteCertificateValidationCallback? ControllerCertificateValidation { get; init; }

    /// <summary>Configured users: access key id to secret access key. Each may use every bucket of the gateway.</summary>
    public IReadOnlyDictionary<string, string> Users { get; init; } = new Dictionary<string, string>();

    /// <summary>
    /// Also accept a bucket's own credentials: access key = the bucket's job id, secret = its job token. Such a
    /// caller may use that one bucket only, and may not create buckets.
    /// </summary>
    public bool AllowJobCredentials { get; init; } = true;

    /// <summary>Region named in responses (GetBucketLocation). Signatures for any region are accepted, as the region is part of what is signed.</summary>
    public string Region { get; init; } = "us-east-1";

    /// <summary>Largest difference between a request's x-amz-date and the gateway's clock.</summary>
    public TimeSpan MaxClockSkew { get; init; } = TimeSpan.FromMinutes(15);

    /// <summary>
    /// Folder for <c>buckets.json</c>, the bucket to (job id, token) map. Null keeps it in memory only: a restarted
    /// gateway then forgets its buckets (their jobs live on until deregistered or their leases run out).
    /// </summary>
    public string? StateDirectory { get; init; }

    /// <summary>Hints used when CreateBucket has no <c>x-pocket-hints</c> header, in the same syntax, e.g. "functions=10,capacity=1GiB".</summary>
    public string? DefaultHints { get; init; }

    /// <summary>Largest object of a single PutObject or CopyObject (S3's limit: 5 GiB).</summary>
    public long MaxPutSize { get; init; } = 5L << 30;

    /// <summary>Largest part of a multipart upload (S3: 5 GiB).</summary>
    public long MaxPartSize { get; init; } = 5L << 30;

    /// <summary>Smallest part of a multipart upload except the last (S3: 5 MiB).</summary>
    public long MinPartSize { get; init; } = 5L << 20;

    /// <summary>Most parts of a multipart upload (S3: 10000).</summary>
    public int MaxParts { get; init; } = 10_000;

    /// <summary>Largest XML body (DeleteObjects, CompleteMultipartUpload, CreateBucket configuration).</summary>
    public int MaxXmlBody { get; init; } = 4 << 20;

    /// <summary>Object records fetched at once while a listing page is filled with ETags and dates.</summary>
    public int ListRecordParallelism { get; init; } = 32;

    /// <summary>
    /// Host name suffix for virtual-hosted-style requests: with "s3.local", a request to "photos.s3.local" addresses
    /// bucket "photos". Null means path-style only (http://host/bucket/key).
    /// </summary>
    public string? VirtualHostSuffix { get; init; }

    /// <summary>Settings of the gateway's Pocket client (data path).</summary>
    public PocketClientOptions Client { get; init; } = new();

    /// <summary>
    /// The cluster's token: sent to the controller as <c>Authorization: Bearer</c> (a controller with a cluster token
    /// refuses calls without it), and to the metadata server when the gateway deregisters a bucket the controller forgot.
    /// </summary>
    public JobToken ClusterToken { get; init; }

    /// <summary>Clock for signature dates and object times; tests pass a fake one.</summary>
    public TimeProvider TimeProvider { get; init; } = TimeProvider.System;

    /// <summary>Throws <see cref="ArgumentException"/> naming the first bad setting.</summary>
    public void Validate()
    {
        ArgumentNullException.ThrowIfNull(ControllerUrl);
        if (!ControllerUrl.IsAbsoluteUri || (ControllerUrl.Scheme != Uri.UriSchemeHttp && ControllerUrl.Scheme != Uri.UriSchemeHttps))
        {
            throw new ArgumentException($"controller url '{ControllerUrl}' is not an absolute http(s) URL");
        }

        if (MetadataAddress is not null)
        {
            var colon = MetadataAddress.LastIndexOf(':');
            if (colon <= 0 || !int.TryParse(MetadataAddress.AsSpan(colon + 1), out var port) || port is <= 0 or > 65535)
            {
                throw new ArgumentException($"metadata address '{MetadataAddress}' is not host:port");
            }
        }

        ArgumentNullException.ThrowIfNull(Listen);
        ArgumentNullException.ThrowIfNull(Users);
        foreach (var (accessKey, secret) in Users)
        {
            if (string.IsNullOrWhiteSpace(accessKey) || accessKey.Contains('/', StringComparison.Ordinal))
            {
                throw new ArgumentException($"access key '{accessKey}' is empty or contains '/'");
            }

            if (string.IsNullOrEmpty(secret))
            {
                throw new ArgumentException($"user '{accessKey}' has an empty secret");
            }
        }

        if (Users.Count == 0 && !AllowJobCredentials)
        {
            throw new ArgumentException("no users are configured and job credentials are off: nobody could sign a request");
        }

        if (string.IsNullOrWhiteSpace(Region))
        {
            throw new ArgumentException("region is empty");
        }

        if (MaxClockSkew <= TimeSpan.Zero)
        {
            throw new ArgumentException("max clock skew must be positive");
        }

        if (DefaultHints is not null && !JobHints.TryParse(DefaultHints, out _, out var hintError))
        {
            throw new ArgumentException($"default hints: {hintError}");
        }

        if (MaxPutSize <= 0 || MaxPartSize <= 0 || MinPartSize <= 0 || MinPartSize > MaxPartSize)
        {
            throw new ArgumentException("object and part size limits must be positive, with the smallest part no larger than the largest");
        }

        if (MaxParts is < 1 or > 99_999)
        {
            throw new ArgumentException("max parts must be between 1 and 99999");
        }

        if (MaxXmlBody < 1024 || ListRecordParallelism < 1)
        {
            throw new ArgumentException("max XML body must be at least 1 KiB and list record parallelism at least 1");
        }

        ArgumentNullException.ThrowIfNull(Client);
        ArgumentNullException.ThrowIfNull(TimeProvider);
    }
}
