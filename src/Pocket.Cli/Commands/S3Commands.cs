using System.CommandLine;
using System.Text.Json.Nodes;
using Spectre.Console;

namespace Pocket.Cli.Commands;

/// <summary>`pocket s3 credentials [JOB]`: what an S3 client (AWS CLI, boto3, Spark) needs to reach the gateway.</summary>
internal static class S3Commands
{
    public static Command Create()
    {
        var job = new Argument<string?>("JOB") { Description = "A job (id, or name when one job has it; a bucket made through S3 by its name): keys limited to its bucket (default: the gateway's user, any bucket)", Arity = ArgumentArity.ZeroOrOne };
        var json = CommandRunner.JsonOption();
        var credentials = new Command("credentials", "Print the S3 endpoint, access key and secret key") { job, json };
        CommandRunner.SetAction(credentials, async (parse, ct) =>
        {
            var home = PocketHome.Default();
            var cluster = home.ReadCluster();
            if (cluster?.Gateway is null)
            {
                throw new CliException("no S3 gateway: start a cluster with `pocket up` (without --no-gateway)");
            }

            // A job's own keys: access key = job id, secret key = its token; the gateway takes them for that job's
            // bucket (named by the job id; a bucket made through S3 also keeps its own name) and nothing else.
            string accessKey, secretKey;
            string? bucket = null;
            if (parse.GetValue(job) is { } jobId)
            {
                var entry = await JobLookup.ResolveAsync(home, jobId, metadataOption: null, ct).ConfigureAwait(false);
                (accessKey, secretKey, bucket) = (entry.Id, entry.Token, entry.Id);
            }
            else
            {
                (accessKey, secretKey) = (cluster.GatewayAccessKey ?? string.Empty, cluster.GatewaySecretKey ?? string.Empty);
            }

            if (parse.GetValue(json))
            {
                var node = new JsonObject { ["endpoint"] = cluster.Gateway, ["accessKey"] = accessKey, ["secretKey"] = secretKey, ["region"] = "us-east-1" };
                if (bucket is not null)
                {
                    node["bucket"] = bucket;
                }

                CommandRunner.WriteJson(node);
            }
            else
            {
                AnsiConsole.MarkupLine($"endpoint:   {Markup.Escape(cluster.Gateway)}");
                AnsiConsole.MarkupLine($"access key: {Markup.Escape(accessKey)}");
                AnsiConsole.MarkupLine($"secret key: {Markup.Escape(secretKey)}");
                if (bucket is not null)
                {
                    AnsiConsole.MarkupLine($"bucket:     {Markup.Escape(bucket)} (these keys reach this bucket only)");
                }

                AnsiConsole.MarkupLine("region:     us-east-1 (path-style addressing)");
            }

            return 0;
        });
        return new Command("s3", "S3 gateway helpers") { credentials };
    }
}
