using System.CommandLine;
using System.Text.Json.Nodes;
using Spectre.Console;

namespace Pocket.Cli.Commands;

/// <summary>`pocket s3 credentials [JOB]`: what an S3 client (AWS CLI, boto3, Spark) needs to reach the gateway.</summary>
internal static class S3Commands
{
    public static Command Create()
    {
        var job = new Argument<string?>("JOB") { Description = "A job of yours: credentials limited to its bucket (default: the gateway's user, any bucket)", Arity = ArgumentArity.ZeroOrOne };
        var json = CommandRunner.JsonOption();
        var credentials = new Command("credentials", "Print the S3 endpoint, access key and secret key") { job, json };
        CommandRunner.SetAction(credentials, (parse, _) =>
        {
            var home = PocketHome.Default();
            var cluster = home.ReadCluster();
            if (cluster?.Gateway is null)
            {
                throw new CliException("no S3 gateway: start a cluster with `pocket up` (without --no-gateway)");
            }

            string accessKey, secretKey;
            if (parse.GetValue(job) is { } jobId)
            {
                var entry = home.ReadJobs().FirstOrDefault(j => j.Id == jobId)
                    ?? throw new CliException($"no token for job '{jobId}' here: register it with `pocket job register`");
                (accessKey, secretKey) = (entry.Id, entry.Token);
            }
            else
            {
                (accessKey, secretKey) = (cluster.GatewayAccessKey ?? string.Empty, cluster.GatewaySecretKey ?? string.Empty);
            }

            if (parse.GetValue(json))
            {
                CommandRunner.WriteJson(new JsonObject { ["endpoint"] = cluster.Gateway, ["accessKey"] = accessKey, ["secretKey"] = secretKey, ["region"] = "us-east-1" });
            }
            else
            {
                AnsiConsole.MarkupLine($"endpoint:   {Markup.Escape(cluster.Gateway)}");
                AnsiConsole.MarkupLine($"access key: {Markup.Escape(accessKey)}");
                AnsiConsole.MarkupLine($"secret key: {Markup.Escape(secretKey)}");
                AnsiConsole.MarkupLine("region:     us-east-1 (path-style addressing)");
            }

            return Task.FromResult(0);
        });
        return new Command("s3", "S3 gateway helpers") { credentials };
    }
}
