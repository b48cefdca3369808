using System.Net;
using System.Net.Http.Headers;
using System.Text;
using System.Text.Json;
using Pocket.Client;
using Pocket.Controller;
using Pocket.Controller.Contracts;
using Pocket.Protocol;

namespace Pocket.Controller.Tests;

/// <summary>The controller's API needs the cluster token as a bearer token on everything but the health check and the OpenAPI document.</summary>
public sealed class ControllerAuthTests
{
    private static readonly (HttpMethod Method, string Path)[] Guarded =
    [
        (HttpMethod.Post, "/v1/jobs"),
        (HttpMethod.Get, "/v1/jobs"),
        (HttpMethod.Get, "/v1/jobs/sort-1"),
        (HttpMethod.Get, "/v1/jobs/sort-1/credentials"),
        (HttpMethod.Delete, "/v1/jobs/sort-1"),
        (HttpMethod.Get, "/v1/cluster"),
        (HttpMethod.Get, "/v1/cluster/history"),
        (HttpMethod.Get, "/v1/events"),
        (HttpMethod.Get, "/v1/no-such-endpoint"),
    ];

    [Fact]
    public async Task EveryEndpointButHealthRefusesAMissingMalformedOrWrongToken()
    {
        await using var h = await ControllerHarness.StartAsync();
        using var http = new HttpClient { BaseAddress = h.Controller.Url, Timeout = TimeSpan.FromSeconds(60) };
        var right = h.Cluster.Options.ClusterToken.ToString();
        string? wrongToken;
        do
        {
            wrongToken = JobToken.NewRandom().ToString();
        }
        while (wrongToken == right);

        var refusals = new (AuthenticationHeaderValue? Header, string Message)[]
        {
            (null, "needs the cluster token"),
            (new("Basic", Convert.ToBase64String(Encoding.ASCII.GetBytes($"admin:{right}"))), "must be 'Bearer <cluster token>'"),
            (new("Bearer", wrongToken), "not the cluster token"),
            (new("Bearer", right[..^1]), "not the cluster token"),
            (new("Bearer", right + "0"), "not the cluster token"),
        };
        foreach (var (method, path) in Guarded)
        {
            foreach (var (header, message) in refusals)
            {
                using var request = Request(method, path, header);
                using var response = await http.SendAsync(request);
                var text = await response.Content.ReadAsStringAsync();
                Assert.True(response.StatusCode == HttpStatusCode.Unauthorized, $"{method} {path} with '{header}': {(int)response.StatusCode} {text}");
                Assert.Equal("application/json", response.Content.Headers.ContentType?.MediaType);
                Assert.Equal("Bearer", Assert.Single(response.Headers.WwwAuthenticate).Scheme);
                using var body = JsonDocument.Parse(text);
                Assert.Contains(message, body.RootElement.GetProperty("error").GetString(), StringComparison.Ordinal);
                Assert.Equal("Authorization", body.RootElement.GetProperty("field").GetString());
            }
        }

        // Nothing refused had any effect.
        Assert.Empty(h.Registry.Jobs);

        // The right token passes on every endpoint: the job is registered, read and deregistered; only the unknown path is 404.
        var statuses = new List<HttpStatusCode>();
        foreach (var (method, path) in Guarded)
        {
            using var request = Request(method, path, new("Bearer", right));
            using var response = await http.SendAsync(request);
            statuses.Add(response.StatusCode);
        }

        Assert.Equal(
            [HttpStatusCode.Created, HttpStatusCode.OK, HttpStatusCode.OK, HttpStatusCode.OK, HttpStatusCode.OK, HttpStatusCode.OK, HttpStatusCode.OK, HttpStatusCode.OK, HttpStatusCode.NotFound],
            statuses);

        // Upper-case hex is the same token.
        using (var upper = Request(HttpMethod.Get, "/v1/jobs", new("Bearer", right.ToUpperInvariant())))
        using (var response = await http.SendAsync(upper))
        {
            Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        }

        // Probes carry no token: the health check and the API description stay open.
        using (var health = await http.GetAsync("/healthz"))
        {
            Assert.Equal(HttpStatusCode.OK, health.StatusCode);
        }

        using (var openApi = await http.GetAsync("/openapi/v1.json"))
        {
            Assert.Equal(HttpStatusCode.OK, openApi.StatusCode);
        }
    }

    [Fact]
    public async Task TheClientSendsItsTokenAndReportsARefusalAsUnauthorized()
    {
        await using var h = await ControllerHarness.StartAsync();
        using var anonymous = new PocketControllerClient(h.Controller.Url);
        using var wrong = new PocketControllerClient(h.Controller.Url, JobToken.NewRandom());
        using var right = new PocketControllerClient(h.Controller.Url, h.Cluster.Options.ClusterToken);

        foreach (var client in new[] { anonymous, wrong })
        {
            var ex = await Assert.ThrowsAsync<PocketControllerException>(() => client.RegisterJobAsync("sort"));
            Assert.Equal(HttpStatusCode.Unauthorized, ex.HttpStatus);
            Assert.Equal(Status.Unauthorized, ex.Status);
            Assert.Contains("cluster token", ex.Message, StringComparison.Ordinal);
            await Assert.ThrowsAsync<PocketControllerException>(() => client.GetClusterAsync());

            // Health needs no token.
            Assert.True((await client.GetHealthAsync()).IsHealthy);
        }

        var job = await right.RegisterJobAsync("sort");
        Assert.Equal(job.JobId, Assert.Single(await right.ListJobsAsync()).JobId);

        // ConnectClientAsync asks the controller with the controller client's cluster token.
        await Assert.ThrowsAsync<PocketControllerException>(() => anonymous.ConnectClientAsync());
        await using var connected = await right.ConnectClientAsync();
        Assert.Equal(h.Cluster.MetadataAddress, connected.MetadataAddress);
    }

    private static HttpRequestMessage Request(HttpMethod method, string path, AuthenticationHeaderValue? header)
    {
        var request = new HttpRequestMessage(method, path) { Headers = { Authorization = header } };
        if (method == HttpMethod.Post)
        {
            request.Content = new StringContent("{\"name\":\"sort\"}", Encoding.UTF8, "application/json");
        }

        return request;
    }
}
