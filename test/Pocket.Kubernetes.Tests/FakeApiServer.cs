using System.Collections.Concurrent;
using System.Net;
using System.Text;
using System.Text.Json;
using k8s;
using k8s.Models;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;

namespace Pocket.Kubernetes.Tests;

/// <summary>One request the fake API server received.</summary>
internal sealed record RecordedRequest(string Method, string Path, IReadOnlyDictionary<string, string> Query, string Body, string? Authorization)
{
    /// <summary>The body as the object the real API server would read, through the library's own serializer.</summary>
    public T BodyAs<T>() => KubernetesJson.Deserialize<T>(Body);
}

/// <summary>An answer to give instead of the default one.</summary>
internal sealed record ApiAnswer(int Status, string Body)
{
    /// <summary>An error as the API server sends it: a Status object with a message.</summary>
    /// <remarks>Written by hand: the library reads Status objects but its converter cannot write them.</remarks>
    public static ApiAnswer Error(int status, string reason, string message) => new(status, JsonSerializer.Serialize(new
    {
        kind = "Status",
        apiVersion = "v1",
        metadata = new { },
        status = "Failure",
        message,
        reason,
        code = status,
    }));
}

/// <summary>
/// A real HTTP server (Kestrel on 127.0.0.1, port 0) posing as the Kubernetes API server for pods: it records
/// every request and answers as the API server would: creates echo the pod, reads return it with a status the test
/// chooses, deletes remove it, unknown pods are 404 Status objects. No cluster runs here; this checks what the
/// provisioner sends, through the real client library and a real socket.
/// </summary>
internal sealed class FakeApiServer : IAsyncDisposable
{
    private readonly WebApplication _app;
    private readonly ConcurrentDictionary<string, V1Pod> _pods = new();
    private readonly ConcurrentDictionary<string, int> _reads = new();
    private readonly ConcurrentDictionary<string, string> _objects = new();

    private FakeApiServer(WebApplication app) => _app = app;

    /// <summary>Every request, in arrival order.</summary>
    public ConcurrentQueue<RecordedRequest> Requests { get; } = new();

    /// <summary>Answers a request in place of the default behaviour when it returns non-null.</summary>
    public Func<RecordedRequest, ApiAnswer?>? Override { get; set; }

    /// <summary>The status a pod shows on its n-th read (0-based); by default it is running and ready at once.</summary>
    public Func<V1Pod, int, V1PodStatus> StatusOnRead { get; set; } = (_, _) => RunningAndReady("10.244.1.7");

    /// <summary>Awaited before each request is answered (e.g. never completing, to play an API server that does not answer).</summary>
    public Func<RecordedRequest, Task>? Before { get; set; }

    /// <summary>Services and Secrets created and not deleted, by "services/NAME" or "secrets/NAME", as sent.</summary>
    public IReadOnlyDictionary<string, string> Objects => _objects;

    /// <summary>Pods created and not deleted.</summary>
    public IReadOnlyDictionary<string, V1Pod> Pods => _pods;

    public string Url { get; private set; } = string.Empty;

    public static async Task<FakeApiServer> StartAsync()
    {
        var builder = WebApplication.CreateSlimBuilder();
        builder.Logging.ClearProviders();
        builder.WebHost.UseKestrel(kestrel => kestrel.Listen(IPAddress.Loopback, 0));
        var app = builder.Build();
        var server = new FakeApiServer(app);
        app.Run(server.HandleAsync);
        await app.StartAsync();
        server.Url = app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses.Single();
        return server;
    }

    /// <summary>A client of the official library pointed at this server.</summary>
    public IKubernetes Client() => new k8s.Kubernetes(new KubernetesClientConfiguration { Host = Url });

    public static V1PodStatus RunningAndReady(string podIp) => new()
    {
        Phase = "Running",
        PodIP = podIp,
        Conditions =
        [
            new V1PodCondition { Type = "PodScheduled", Status = "True" },
            new V1PodCondition { Type = "Ready", Status = "True" },
        ],
    };

    public static V1PodStatus Pending(string? unschedulableMessage = null) => new()
    {
        Phase = "Pending",
        Conditions = unschedulableMessage is null
            ? []
            : [new V1PodCondition { Type = "PodScheduled", Status = "False", Reason = "Unschedulable", Message = unschedulableMessage }],
    };

    private async Task HandleAsync(HttpContext context)
    {
        using var reader = new StreamReader(context.Request.Body, Encoding.UTF8);
        var body = await reader.ReadToEndAsync(context.RequestAborted);
        var query = context.Request.Query.ToDictionary(q => q.Key, q => q.Value.ToString(), StringComparer.Ordinal);
        var authorization = context.Request.Headers.Authorization.ToString();
        var request = new RecordedRequest(context.Request.Method, context.Request.Path.Value ?? string.Empty, query, body, authorization.Length == 0 ? null : authorization);
        Requests.Enqueue(request);

        if (Before is { } before)
        {
            await before(request);
        }

        var answer = Override?.Invoke(request) ?? Answer(request);
        context.Response.StatusCode = answer.Status;
        context.Response.ContentType = "application/json";
        await context.Response.WriteAsync(answer.Body, context.RequestAborted);
    }

    private ApiAnswer Answer(RecordedRequest request)
    {
        // /api/v1/namespaces/{ns}/pods[/{name}]
        var parts = request.Path.Split('/', StringSplitOptions.RemoveEmptyEntries);
        if (parts is ["api", "v1", "namespaces", _, var kind, ..] && kind is "services" or "secrets" && parts.Length <= 6)
        {
            return AnswerObject(request, kind, parts.Length == 6 ? parts[5] : null);
        }
        if (parts is not ["api", "v1", "namespaces", var ns, "pods", ..] || parts.Length > 6)
        {
            return ApiAnswer.Error(404, "NotFound", $"the server could not find the requested resource ({request.Method} {request.Path})");
        }

        var name = parts.Length == 6 ? parts[5] : null;
        switch (request.Method, name)
        {
            case ("POST", null):
                var pod = request.BodyAs<V1Pod>();
                pod.Metadata.NamespaceProperty = ns;
                pod.Metadata.Uid = Guid.NewGuid().ToString();
                pod.Status = new V1PodStatus { Phase = "Pending" };
                return _pods.TryAdd(pod.Metadata.Name, pod)
                    ? new ApiAnswer(201, KubernetesJson.Serialize(pod))
                    : ApiAnswer.Error(409, "AlreadyExists", $"pods \"{pod.Metadata.Name}\" already exists");
            case ("GET", null):
                var list = new V1PodList { ApiVersion = "v1", Kind = "PodList", Metadata = new V1ListMeta(), Items = [.. _pods.Values] };
                return new ApiAnswer(200, KubernetesJson.Serialize(list));
            case ("GET", { } podName) when _pods.TryGetValue(podName, out var existing):
                var read = _reads.AddOrUpdate(podName, 0, (_, n) => n + 1);
                existing.Status = StatusOnRead(existing, read);
                return new ApiAnswer(200, KubernetesJson.Serialize(existing));
            case ("DELETE", { } podName) when _pods.TryRemove(podName, out var removed):
                return new ApiAnswer(200, KubernetesJson.Serialize(removed));
            case (_, { } podName):
                return ApiAnswer.Error(404, "NotFound", $"pods \"{podName}\" not found");
            default:
                return ApiAnswer.Error(405, "MethodNotAllowed", $"{request.Method} is not supported here");
        }
    }

    /// <summary>Services and Secrets: kept as sent, 409 on a second create, 404 when missing.</summary>
    private ApiAnswer AnswerObject(RecordedRequest request, string kind, string? name)
    {
        var what = kind == "services" ? "Service" : "Secret";
        switch (request.Method, name)
        {
            case ("POST", null):
                var created = request.BodyAs<V1ObjectMetaHolder>().Metadata.Name;
                return _objects.TryAdd($"{kind}/{created}", request.Body)
                    ? new ApiAnswer(201, request.Body)
                    : ApiAnswer.Error(409, "AlreadyExists", $"{kind} \"{created}\" already exists");
            case ("GET", { } found) when _objects.TryGetValue($"{kind}/{found}", out var body):
                return new ApiAnswer(200, body);
            case ("DELETE", { } found) when _objects.TryRemove($"{kind}/{found}", out _):
                return new ApiAnswer(200, JsonSerializer.Serialize(new { kind = "Status", apiVersion = "v1", metadata = new { }, status = "Success" }));
            case (_, { } missing):
                return ApiAnswer.Error(404, "NotFound", $"{kind} \"{missing}\" not found");
            default:
                return ApiAnswer.Error(405, "MethodNotAllowed", $"{request.Method} of {what} is not supported here");
        }
    }

    private sealed class V1ObjectMetaHolder
    {
        [System.Text.Json.Serialization.JsonPropertyName("metadata")]
        public V1ObjectMeta Metadata { get; set; } = new();
    }

    public async ValueTask DisposeAsync()
    {
        await _app.StopAsync();
        await _app.DisposeAsync();
    }
}
