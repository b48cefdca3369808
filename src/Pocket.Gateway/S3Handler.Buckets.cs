using System.Net;
using Microsoft.AspNetCore.Http;
using Pocket.Admin;
using Pocket.Client;
using Pocket.Controller.Contracts;

namespace Pocket.Gateway;

/// <summary>Bucket operations: a bucket is a Pocket job registered through the controller.</summary>
internal sealed partial class S3Handler
{
    private const string OwnerId = "pocket";

    private async Task ListBucketsAsync(S3Request request, AuthResult auth)
    {
        // Every job is a bucket: a user sees the jobs registered elsewhere too (by id; adopted when first addressed), a
        // job's own keys see its bucket only.
        List<(string Name, DateTimeOffset Created)> buckets;
        if (auth.Principal.OnlyJob is { } only)
        {
            var own = await RequireBucketAsync(only, auth).ConfigureAwait(false);
            buckets = [(own.Name, own.Entry.Created)];
        }
        else
        {
            buckets = [.. _buckets.All.Select(b => (b.Name, b.Entry.Created))];
            buckets.AddRange(await _adoption.UnadoptedAsync(request.Context.RequestAborted).ConfigureAwait(false));
            buckets.Sort((x, y) => string.CompareOrdinal(x.Name, y.Name));
        }

        var xml = S3Xml.Document("ListAllMyBucketsResult", w =>
        {
            w.WriteStartElement("Owner");
            w.Element("ID", OwnerId);
            w.Element("DisplayName", OwnerId);
            w.WriteEndElement();
            w.WriteStartElement("Buckets");
            foreach (var bucket in buckets)
            {
                w.WriteStartElement("Bucket");
                w.Element("Name", bucket.Name);
                w.Element("CreationDate", S3Xml.Time(bucket.Created));
                w.WriteEndElement();
            }

            w.WriteEndElement();
        });
        await WriteXmlAsync(request.Context, xml).ConfigureAwait(false);
    }

    private async Task CreateBucketAsync(S3Request request, AuthResult auth)
    {
        var name = request.Bucket!;
        if (auth.Principal.OnlyJob is not null)
        {
            throw new S3Exception(S3Error.AccessDenied, "Access Denied: a job's own credentials cannot create buckets.");
        }

        if (!IsValidBucketName(name, out var why))
        {
            throw new S3Exception(S3Error.InvalidBucketName, $"The specified bucket is not valid: {why}");
        }

        var hintText = request.Header(JobHints.HeaderName) ?? _options.DefaultHints;
        if (!JobHints.TryParse(hintText, out var hints, out var hintError))
        {
            throw new S3Exception(S3Error.InvalidArgument, $"{JobHints.HeaderName}: {hintError}");
        }

        // The body, if any, is a CreateBucketConfiguration (a location constraint): Pocket has one region, so it is
        // read (and checked against its signature) but not used.
        var body = await ReadSmallBodyAsync(request, auth).ConfigureAwait(false);
        if (body.Length > 0)
        {
            S3Xml.Parse(body, "CreateBucketConfiguration");
        }

        // A registered job of that id is that bucket already (adopted now); creating it again would hide the job.
        if (_buckets.Find(name) is null && await _adoption.FindAsync(name, request.Context.RequestAborted).ConfigureAwait(false) is { } adopted)
        {
            throw adopted.Name == name
                ? new S3Exception(S3Error.BucketAlreadyOwnedByYou, $"Your previous request to create the named bucket succeeded and you already own it: it is job {adopted.Entry.JobId}.")
                : new S3Exception(S3Error.BucketAlreadyExists, $"The requested bucket name is not available: it is the id of job {adopted.Entry.JobId}, which is bucket {adopted.Name}.");
        }

        var owner = _buckets.TryReserve(name);
        if (owner is not null)
        {
            throw owner.Length == 0
                ? new S3Exception(S3Error.OperationAborted, "A conflicting conditional operation is currently in progress against this resource: the bucket is being created.")
                : owner == auth.Principal.AccessKey
                ? new S3Exception(S3Error.BucketAlreadyOwnedByYou, "Your previous request to create the named bucket succeeded and you already own it.")
                : new S3Exception(S3Error.BucketAlreadyExists, "The requested bucket name is not available. Please select a different name and try again.");
        }

        try
        {
            RegisterJobResponse job;
            try
            {
                job = await _controller.RegisterJobAsync(name, hints, request.Context.RequestAborted).ConfigureAwait(false);
            }
            catch (PocketControllerException ex)
            {
                throw ex.HttpStatus switch
                {
                    null => new S3Exception(S3Error.ServiceUnavailable, $"The Pocket controller could not be reached: {ex.Message}", ex),
                    HttpStatusCode.BadRequest => new S3Exception(S3Error.InvalidArgument, $"The bucket's hints ({JobHints.HeaderName}) were refused: {ex.Message}"),
                    HttpStatusCode.UnprocessableEntity => new S3Exception(S3Error.InvalidArgument, $"Pocket cannot size a job for these hints: {ex.Message}"),
                    HttpStatusCode.ServiceUnavailable => new S3Exception(S3Error.ServiceUnavailable, $"Pocket could not start storage for the bucket: {ex.Message}"),
                    { } status => new S3Exception(S3Error.InternalError, $"The Pocket controller answered {(int)status}: {ex.Message}"),
                };
            }

            await _buckets.AddAsync(new BucketEntry(name, job.JobId, job.Token.ToString(), Clock.GetUtcNow(), auth.Principal.AccessKey, job.Metadata)).ConfigureAwait(false);
            GatewayLog.BucketCreated(_logger, name, job.JobId, auth.Principal.AccessKey);
        }
        finally
        {
            _buckets.Unreserve(name);
        }

        request.Context.Response.Headers.Location = "/" + name;
        request.Context.Response.StatusCode = StatusCodes.Status200OK;
        request.Context.Response.ContentLength = 0;
    }

    private async Task DeleteBucketAsync(S3Request request, AuthResult auth)
    {
        var bucket = await RequireBucketAsync(request.Bucket!, auth).ConfigureAwait(false);
        if (await HasUserObjectsAsync(bucket.Job, request.Context.RequestAborted).ConfigureAwait(false))
        {
            throw new S3Exception(S3Error.BucketNotEmpty, "The bucket you tried to delete is not empty.");
        }

        // Deregistering frees everything at once, including unfinished multipart uploads and object records.
        if (!await DeregisterThroughControllerAsync(bucket.Entry.JobId, request.Context.RequestAborted).ConfigureAwait(false))
        {
            await DeregisterDirectlyAsync(bucket).ConfigureAwait(false);
        }

        await _buckets.RemoveAsync(bucket.Name).ConfigureAwait(false);
        GatewayLog.BucketDeleted(_logger, bucket.Name, bucket.Entry.JobId);
        request.Context.Response.StatusCode = StatusCodes.Status204NoContent;
    }

    /// <summary>Deregisters a bucket's job: every byte is freed at once. False when the controller did not know the job.</summary>
    private async Task<bool> DeregisterThroughControllerAsync(string jobId, CancellationToken cancellationToken)
    {
        try
        {
            await _controller.DeregisterAsync(jobId, cancellationToken).ConfigureAwait(false);
            return true;
        }
        catch (PocketControllerException ex) when (ex.HttpStatus == HttpStatusCode.NotFound)
        {
            return false;
        }
        catch (PocketControllerException ex)
        {
            throw ex.HttpStatus is { } status
                ? new S3Exception(S3Error.InternalError, $"The Pocket controller answered {(int)status}: {ex.Message}")
                : new S3Exception(S3Error.ServiceUnavailable, $"The Pocket controller could not be reached: {ex.Message}", ex);
        }
    }

    /// <summary>
    /// The controller did not know the job (it restarted, or someone else registered it): deregister it on the
    /// metadata server directly, which works when the gateway's client holds the cluster token.
    /// </summary>
    private async Task DeregisterDirectlyAsync(Bucket bucket)
    {
        try
        {
            await new PocketAdminClient(bucket.Job.Client, _options.ClusterToken).DeregisterJobAsync(bucket.Entry.JobId).ConfigureAwait(false);
            GatewayLog.ControllerForgotJob(_logger, bucket.Entry.JobId, bucket.Name, "deregistered it on the metadata server");
        }
        catch (PocketException ex)
        {
            GatewayLog.ControllerForgotJob(_logger, bucket.Entry.JobId, bucket.Name, $"the metadata server refused too ({ex.Message}); its data stays until its lease runs out");
        }
    }

    private async Task HeadBucketAsync(S3Request request, AuthResult auth)
    {
        var bucket = await RequireBucketAsync(request.Bucket!, auth).ConfigureAwait(false);

        // A cheap request that fails with Unauthorized when the job has ended, so HeadBucket tells the truth.
        await bucket.Job.GetUsageAsync(request.Context.RequestAborted).ConfigureAwait(false);
        request.Context.Response.Headers["x-amz-bucket-region"] = _options.Region;
        request.Context.Response.StatusCode = StatusCodes.Status200OK;
        request.Context.Response.ContentLength = 0;
    }

    private async Task GetBucketLocationAsync(S3Request request, AuthResult auth)
    {
        await RequireBucketAsync(request.Bucket!, auth).ConfigureAwait(false);

        // S3 answers an empty constraint for us-east-1.
        var region = _options.Region == "us-east-1" ? null : _options.Region;
        var xml = S3Xml.Document("LocationConstraint", w =>
        {
            if (region is not null)
            {
                w.WriteString(region);
            }
        });
        await WriteXmlAsync(request.Context, xml).ConfigureAwait(false);
    }

    private async Task GetBucketVersioningAsync(S3Request request, AuthResult auth)
    {
        // Pocket keeps one version of each object: versioning was never enabled.
        await RequireBucketAsync(request.Bucket!, auth).ConfigureAwait(false);
        await WriteXmlAsync(request.Context, S3Xml.Document("VersioningConfiguration", _ => { })).ConfigureAwait(false);
    }

    /// <summary>True when the bucket holds any object of the user (the gateway's own records do not count).</summary>
    private static async Task<bool> HasUserObjectsAsync(PocketJob job, CancellationToken cancellationToken)
    {
        // Delimited at the root, all records fold into one entry, which sorts last.
        await foreach (var entry in job.ListAsync(string.Empty, delimited: true, pageSize: 2, cancellationToken).ConfigureAwait(false))
        {
            return !KeyMapping.IsRecord(entry.Key);
        }

        return false;
    }

    /// <summary>S3's bucket naming rules (the ones for new buckets), which also make valid Pocket job names.</summary>
    internal static bool IsValidBucketName(string name, out string why)
    {
        why = string.Empty;
        if (name.Length is < 3 or > 63)
        {
            why = "bucket names are 3 to 63 characters long";
            return false;
        }

        foreach (var c in name)
        {
            if (c is not ((>= 'a' and <= 'z') or (>= '0' and <= '9') or '.' or '-'))
            {
                why = "bucket names may contain only lower-case letters, digits, '.' and '-'";
                return false;
            }
        }

        if (!char.IsAsciiLetterOrDigit(name[0]) || !char.IsAsciiLetterOrDigit(name[^1]))
        {
            why = "bucket names begin and end with a letter or digit";
            return false;
        }

        if (name.Contains("..", StringComparison.Ordinal) || name.Contains(".-", StringComparison.Ordinal) || name.Contains("-.", StringComparison.Ordinal))
        {
            why = "bucket names may not contain '..', '.-' or '-.'";
            return false;
        }

        if (System.Net.IPAddress.TryParse(name, out _) && name.Count(c => c == '.') == 3)
        {
            why = "bucket names may not look like an IP address";
            return false;
        }

        if (name.StartsWith("xn--", StringComparison.Ordinal) || name.StartsWith("sthree-", StringComparison.Ordinal)
            || name.EndsWith("-s3alias", StringComparison.Ordinal) || name.EndsWith("--ol-s3", StringComparison.Ordinal))
        {
            why = "bucket names may not begin with 'xn--' or 'sthree-' or end with '-s3alias' or '--ol-s3'";
            return false;
        }

        return true;
    }
}
