using System.Globalization;
using System.Text;
using System.Text.Json;
using System.Text.Json.Serialization;
using Pocket.Controller.Contracts;
using Pocket.Controller.Scaling;
using Pocket.Controller.Sizing;
using Pocket.Protocol;

namespace Pocket.Controller.Simulation;

/// <summary>One point of a job's profile: from <see cref="At"/> seconds after the job starts, what it asks of the store.</summary>
/// <param name="At">Seconds after the job's start.</param>
/// <param name="ThroughputBitsPerSecond">Reads plus writes the job drives, bits/s.</param>
/// <param name="CapacityBytes">Bytes the job holds in the store.</param>
public sealed record ProfilePoint(double At, double ThroughputBitsPerSecond, long CapacityBytes);

/// <summary>A job of a trace: its tier, when it starts, and a piecewise-linear profile that ends with its last point.</summary>
public sealed record SimulatedJob(string Name, double Start, NodeTier Tier, IReadOnlyList<ProfilePoint> Profile, double Noise)
{
    /// <summary>
    /// Whether the job declares its peaks when it registers (hints: its profile's highest throughput and bytes), as
    /// <c>pocket job register --throughput --capacity</c> does; false: it registers without hints.
    /// </summary>
    public bool Declared { get; init; } = true;

    /// <summary>What the job declares at registration as the policy sees it (null peaks when it declares none).</summary>
    public RegisteredJob Registration(DateTimeOffset epoch) => new(
        Tier,
        epoch + TimeSpan.FromSeconds(Start),
        Declared ? Profile.Max(p => p.ThroughputBitsPerSecond) : null,
        Declared ? Profile.Max(p => p.CapacityBytes) : null);

    /// <summary>When the job ends (its data is freed then): the start plus the last point's time.</summary>
    public double End => Start + Profile[^1].At;

    /// <summary>Throughput (bits/s) and bytes at <paramref name="second"/>, interpolated between profile points; zero outside the job.</summary>
    public (double ThroughputBitsPerSecond, double CapacityBytes) At(double second)
    {
        var t = second - Start;
        if (t < 0 || t >= Profile[^1].At)
        {
            return (0, 0);
        }

        for (var i = Profile.Count - 1; i >= 0; i--)
        {
            var p = Profile[i];
            if (p.At <= t)
            {
                if (i == Profile.Count - 1)
                {
                    return (p.ThroughputBitsPerSecond, p.CapacityBytes);
                }

                var q = Profile[i + 1];
                var f = (t - p.At) / (q.At - p.At);
                return (p.ThroughputBitsPerSecond + (f * (q.ThroughputBitsPerSecond - p.ThroughputBitsPerSecond)),
                    p.CapacityBytes + (f * (q.CapacityBytes - p.CapacityBytes)));
            }
        }

        return (0, 0);
    }
}

/// <summary>What one storage node of a tier offers in the simulation.</summary>
/// <param name="Tier">The tier.</param>
/// <param name="BandwidthBitsPerSecond">Network rx + tx one node serves.</param>
/// <param name="CapacityBytes">Bytes one node stores.</param>
/// <param name="CpuAtFullBandwidth">The CPU share (0-1) a node uses when its network is saturated; CPU is modelled as proportional to traffic.</param>
public sealed record SimulatedNodeClass(NodeTier Tier, double BandwidthBitsPerSecond, long CapacityBytes, double CpuAtFullBandwidth);

/// <summary>
/// A job trace for <see cref="ClusterSimulator"/>: jobs, node classes, the nodes the cluster starts with, the policy's
/// settings, and how long a node takes to start and to drain. Read from JSON by <see cref="Parse"/> (format:
/// docs/controller.md, "Simulating the autoscaler").
/// </summary>
public sealed record SimulationTrace
{
    /// <summary>The name of the trace shipped with Pocket, used when no trace is given.</summary>
    public const string ShippedName = "paper-three-jobs";

    /// <summary>Largest <see cref="WarmPool"/> (as <c>pocket up</c> allows).</summary>
    public const int MaxWarmPool = 64;

    /// <summary>The trace's name.</summary>
    public string Name { get; init; } = "trace";

    /// <summary>The metadata plane's model (its request-rate assumption, band and size); by default one server throughout.</summary>
    public MetadataModelOptions Metadata { get; init; } = new();

    /// <summary>What the trace models, in words.</summary>
    public string? Description { get; init; }

    /// <summary>The jobs.</summary>
    public required IReadOnlyList<SimulatedJob> Jobs { get; init; }

    /// <summary>Nodes running at second 0, per tier.</summary>
    public required IReadOnlyDictionary<NodeTier, int> InitialNodes { get; init; }

    /// <summary>Node classes; one per tier used.</summary>
    public required IReadOnlyDictionary<NodeTier, SimulatedNodeClass> NodeClasses { get; init; }

    /// <summary>The policy's settings (band, min and max nodes, cooldown, watched resources).</summary>
    public AutoscalerOptions Policy { get; init; } = new();

    /// <summary>From the decision to add a node until it serves.</summary>
    public TimeSpan StartDelay { get; init; } = TimeSpan.FromSeconds(5);

    /// <summary>From the decision to remove a node until it is stopped (its blocks move meanwhile).</summary>
    public TimeSpan DrainTime { get; init; } = TimeSpan.FromSeconds(5);

    /// <summary>
    /// Idle standby nodes kept per tier (<c>pocket up --warm-pool N</c>): a scale-up takes one, which serves after
    /// <see cref="WarmDelay"/> instead of <see cref="StartDelay"/>, and a replacement starts (one at a time per tier,
    /// taking the start delay). Pool nodes cost node-seconds while they stand by or start. 0: no pool.
    /// </summary>
    public int WarmPool { get; init; }

    /// <summary>From the decision to add a node until a node taken from the warm pool serves (one round trip live: 0 s, i.e. the next second).</summary>
    public TimeSpan WarmDelay { get; init; } = TimeSpan.Zero;

    /// <summary>Seconds to simulate; null: until the jobs have ended and the cluster has settled.</summary>
    public int? Duration { get; init; }

    /// <summary>Seed of the per-second noise of jobs that ask for it (same seed, same run).</summary>
    public ulong Seed { get; init; } = 1;

    /// <summary>The class of <paramref name="tier"/>.</summary>
    public SimulatedNodeClass ClassOf(NodeTier tier) => NodeClasses[tier];

    /// <summary>
    /// The traces shipped with Pocket: the paper's three jobs, a burst of many small jobs and a long day with peaks
    /// (docs/controller.md, "Simulating the autoscaler", has what each is and what the policy costs on it).
    /// </summary>
    public static IReadOnlyList<string> ShippedNames { get; } = [ShippedName, "burst-small-jobs", "day-with-peaks"];

    /// <summary>A shipped trace as JSON (the template `pocket simulate --write-trace` writes); <paramref name="name"/> one of <see cref="ShippedNames"/>.</summary>
    public static string ShippedJson(string name = ShippedName)
    {
        if (!ShippedNames.Contains(name, StringComparer.Ordinal))
        {
            throw new ArgumentException($"'{name}' is not a shipped trace ({string.Join(", ", ShippedNames)})", nameof(name));
        }

        using var stream = typeof(SimulationTrace).Assembly.GetManifestResourceStream($"Pocket.Controller.Simulation.{name}.json")
            ?? throw new InvalidOperationException($"the shipped trace {name} is missing from the assembly");
        using var reader = new StreamReader(stream, Encoding.UTF8);
        return reader.ReadToEnd();
    }

    /// <summary>A shipped trace (by default <c>paper-three-jobs</c>).</summary>
    public static SimulationTrace Shipped(string name = ShippedName) => Parse(ShippedJson(name));

    /// <summary>Reads a trace from JSON; throws <see cref="SimulationTraceException"/> naming the line or field at fault.</summary>
    public static SimulationTrace Parse(string json)
    {
        TraceDto? dto;
        try
        {
            dto = JsonSerializer.Deserialize(json, TraceJsonContext.Default.TraceDto);
        }
        catch (JsonException ex)
        {
            var where = ex.LineNumber is { } line ? string.Create(CultureInfo.InvariantCulture, $"line {line + 1}, column {(ex.BytePositionInLine ?? 0) + 1}") : "at the start";
            var field = string.IsNullOrEmpty(ex.Path) || ex.Path == "$" ? "" : $" ({ex.Path.TrimStart('$', '.')})";
            var what = ex.Message.Contains("could not be mapped", StringComparison.Ordinal)
                ? $"unknown field '{ex.Path?[(ex.Path.LastIndexOf('.') + 1)..]}'"
                : FirstSentence(ex.Message);
            throw new SimulationTraceException($"bad JSON at {where}{field}: {what}", ex);
        }

        if (dto is null)
        {
            throw new SimulationTraceException("the trace is empty (null)");
        }

        return FromDto(dto);
    }

    private static string FirstSentence(string message)
    {
        // System.Text.Json appends "Path: ... | LineNumber: ..." which the caller already says better.
        var cut = message.IndexOf(" Path:", StringComparison.Ordinal);
        return cut > 0 ? message[..cut] : message;
    }

    private static SimulationTrace FromDto(TraceDto dto)
    {
        var defaults = new SizingOptions();
        var classes = new Dictionary<NodeTier, SimulatedNodeClass>();
        foreach (var c in defaults.NodeClasses)
        {
            classes[c.Tier] = new SimulatedNodeClass(c.Tier, c.BandwidthBitsPerSecond, c.CapacityBytes, 0.5);
        }

        foreach (var (key, value) in dto.NodeClasses ?? [])
        {
            var path = $"nodeClasses.{key}";
            var tier = ParseTier(key, path);
            if (value is null)
            {
                throw new SimulationTraceException($"{path}: null is not a node class");
            }

            var baseClass = classes[tier];
            var bandwidth = value.Bandwidth is { } b ? Throughput(b, $"{path}.bandwidth") : baseClass.BandwidthBitsPerSecond;
            var capacity = value.Capacity is { } c ? Bytes(c, $"{path}.capacity") : baseClass.CapacityBytes;
            var cpu = value.CpuAtFullBandwidth ?? baseClass.CpuAtFullBandwidth;
            if (!(bandwidth > 0))
            {
                throw new SimulationTraceException($"{path}.bandwidth: must be positive");
            }

            if (capacity <= 0)
            {
                throw new SimulationTraceException($"{path}.capacity: must be positive");
            }

            if (!(cpu is >= 0 and <= 1))
            {
                throw new SimulationTraceException($"{path}.cpuAtFullBandwidth: must be between 0 and 1");
            }

            classes[tier] = new SimulatedNodeClass(tier, bandwidth, capacity, cpu);
        }

        var policy = ReadPolicy(dto.Policy);
        var initial = new Dictionary<NodeTier, int>();
        foreach (var (key, count) in dto.InitialNodes ?? [])
        {
            var tier = ParseTier(key, $"initialNodes.{key}");
            if (count < 0)
            {
                throw new SimulationTraceException($"initialNodes.{key}: must be >= 0");
            }

            initial[tier] = count;
        }

        if (initial.Count == 0)
        {
            initial[NodeTier.Dram] = policy.MinNodes;
        }

        if (initial.Values.Sum() > policy.MaxNodes)
        {
            throw new SimulationTraceException($"initialNodes: {initial.Values.Sum()} nodes exceed policy.maxNodes ({policy.MaxNodes})");
        }

        if (dto.Jobs is not { Count: > 0 } jobsDto)
        {
            throw new SimulationTraceException("jobs: at least one job is needed");
        }

        var jobs = new List<SimulatedJob>();
        for (var j = 0; j < jobsDto.Count; j++)
        {
            jobs.Add(Job(jobsDto[j] ?? throw new SimulationTraceException($"jobs[{j}]: null is not a job"), $"jobs[{j}]", initial));
        }

        var duplicate = jobs.GroupBy(j => j.Name, StringComparer.Ordinal).FirstOrDefault(g => g.Count() > 1);
        if (duplicate is not null)
        {
            throw new SimulationTraceException($"jobs: the name '{duplicate.Key}' is used twice");
        }

        if (dto.Duration is { } duration && duration is <= 0 or > 7 * 24 * 3600)
        {
            throw new SimulationTraceException("duration: must be between 1 and 604800 seconds");
        }

        return new SimulationTrace
        {
            Name = string.IsNullOrWhiteSpace(dto.Name) ? "trace" : dto.Name,
            Description = dto.Description,
            Jobs = jobs,
            InitialNodes = initial,
            NodeClasses = classes,
            Policy = policy,
            StartDelay = Seconds(dto.StartDelay, "startDelay") ?? TimeSpan.FromSeconds(5),
            DrainTime = Seconds(dto.DrainTime, "drainTime") ?? TimeSpan.FromSeconds(5),
            WarmPool = dto.WarmPool is { } pool && pool is < 0 or > MaxWarmPool
                ? throw new SimulationTraceException(string.Create(CultureInfo.InvariantCulture, $"warmPool: {pool} must be between 0 and {MaxWarmPool} nodes per tier"))
                : dto.WarmPool ?? 0,
            WarmDelay = Seconds(dto.WarmDelay, "warmDelay") ?? TimeSpan.Zero,
            Duration = dto.Duration,
            Seed = dto.Seed ?? 1,
        };
    }

    private static AutoscalerOptions ReadPolicy(PolicyDto? dto)
    {
        var policy = new AutoscalerOptions();
        if (dto is null)
        {
            return policy;
        }

        var resources = policy.Resources;
        if (dto.Resources is { } names)
        {
            resources = ScalingResources.None;
            foreach (var name in names)
            {
                resources |= name?.ToLowerInvariant() switch
                {
                    "cpu" => ScalingResources.Cpu,
                    "network" => ScalingResources.Network,
                    "capacity" => ScalingResources.Capacity,
                    _ => throw new SimulationTraceException($"policy.resources: '{name}' is not one of cpu, network, capacity"),
                };
            }
        }

        policy = policy with
        {
            Lower = dto.Lower ?? policy.Lower,
            Upper = dto.Upper ?? policy.Upper,
            MinNodes = dto.MinNodes ?? policy.MinNodes,
            MaxNodes = dto.MaxNodes ?? policy.MaxNodes,
            Cooldown = Seconds(dto.Cooldown, "policy.cooldown") ?? policy.Cooldown,
            Lead = Seconds(dto.Lead, "policy.lead") ?? policy.Lead,
            Resources = resources,
        };
        try
        {
            policy.Validate();
        }
        catch (ArgumentException ex)
        {
            throw new SimulationTraceException($"policy: {ex.Message}", ex);
        }

        return policy;
    }

    private static SimulatedJob Job(JobDto dto, string path, Dictionary<NodeTier, int> initial)
    {
        if (string.IsNullOrWhiteSpace(dto.Name))
        {
            throw new SimulationTraceException($"{path}.name: every job needs a name");
        }

        path = $"{path} ({dto.Name})";
        var start = dto.Start ?? 0;
        if (!(start >= 0) || !double.IsFinite(start))
        {
            throw new SimulationTraceException($"{path}.start: must be >= 0 seconds");
        }

        var tier = dto.Tier is { } t ? ParseTier(t, $"{path}.tier") : NodeTier.Dram;
        if (!initial.TryGetValue(tier, out var nodes) || nodes == 0)
        {
            throw new SimulationTraceException($"{path}.tier: no initial {NodeTierNames.Name(tier)} node; the autoscaler grows a tier, it does not create one (add \"{NodeTierNames.Name(tier)}\": 1 to initialNodes)");
        }

        var noise = dto.Noise ?? 0;
        if (!(noise is >= 0 and < 1))
        {
            throw new SimulationTraceException($"{path}.noise: must be >= 0 and < 1 (a fraction of the demand)");
        }

        if (dto.Profile is not { Count: >= 2 } points)
        {
            throw new SimulationTraceException($"{path}.profile: at least two points are needed (the first at 0 s, the last is when the job ends)");
        }

        var profile = new List<ProfilePoint>();
        double throughput = 0;
        long capacity = 0;
        for (var i = 0; i < points.Count; i++)
        {
            var where = $"{path}.profile[{i}]";
            var p = points[i] ?? throw new SimulationTraceException($"{where}: null is not a point");
            var at = p.At ?? throw new SimulationTraceException($"{where}.at: missing (seconds after the job's start)");
            if (i == 0 && at != 0)
            {
                throw new SimulationTraceException($"{where}.at: the first point must be at 0");
            }

            if (!double.IsFinite(at) || (i > 0 && !(at > profile[^1].At)))
            {
                throw new SimulationTraceException($"{where}.at: times must increase");
            }

            throughput = p.Throughput is { } tp ? Throughput(tp, $"{where}.throughput") : throughput;
            capacity = p.Capacity is { } cp ? Bytes(cp, $"{where}.capacity") : capacity;
            profile.Add(new ProfilePoint(at, throughput, capacity));
        }

        return new SimulatedJob(dto.Name, start, tier, profile, noise) { Declared = dto.Hints ?? true };
    }

    private static NodeTier ParseTier(string text, string path) =>
        NodeTierNames.TryParse(text, out var tier) ? tier : throw new SimulationTraceException($"{path}: '{text}' is not a tier ({NodeTierNames.List})");

    private static double Throughput(JsonElement value, string path)
    {
        double bits;
        if (value.ValueKind == JsonValueKind.Number)
        {
            bits = value.GetDouble();
        }
        else if (value.ValueKind == JsonValueKind.String && value.GetString() is { } text)
        {
            if (text.TrimStart().StartsWith('-'))
            {
                throw new SimulationTraceException($"{path}: '{text}' is negative");
            }

            if (!Units.TryParseBitsPerSecond(text, out bits))
            {
                throw new SimulationTraceException($"{path}: '{text}' is not a throughput (examples: 8Gbps, 500Mb/s, 1GB/s, or bits/s as a number)");
            }
        }
        else
        {
            throw new SimulationTraceException($"{path}: a throughput is a number of bits/s or a string like \"8Gbps\"");
        }

        if (!(bits >= 0) || !double.IsFinite(bits))
        {
            throw new SimulationTraceException(string.Create(CultureInfo.InvariantCulture, $"{path}: {bits} is negative"));
        }

        return bits;
    }

    private static long Bytes(JsonElement value, string path)
    {
        if (value.ValueKind == JsonValueKind.Number)
        {
            var number = value.GetDouble();
            if (!(number >= 0) || number > long.MaxValue)
            {
                throw new SimulationTraceException(string.Create(CultureInfo.InvariantCulture, $"{path}: {number} is negative or too large"));
            }

            return (long)Math.Ceiling(number);
        }

        if (value.ValueKind == JsonValueKind.String && value.GetString() is { } text)
        {
            if (text.TrimStart().StartsWith('-'))
            {
                throw new SimulationTraceException($"{path}: '{text}' is negative");
            }

            if (Units.TryParseBytes(text, out var bytes))
            {
                return bytes;
            }

            throw new SimulationTraceException($"{path}: '{text}' is not a size (examples: 10GB, 512MiB, or bytes as a number)");
        }

        throw new SimulationTraceException($"{path}: a size is a number of bytes or a string like \"10GB\"");
    }

    private static TimeSpan? Seconds(double? value, string path)
    {
        if (value is not { } seconds)
        {
            return null;
        }

        if (!(seconds >= 0) || seconds > 86400)
        {
            throw new SimulationTraceException(string.Create(CultureInfo.InvariantCulture, $"{path}: {seconds} must be between 0 and 86400 seconds"));
        }

        return TimeSpan.FromSeconds(seconds);
    }
}

/// <summary>A trace that cannot be read; the message names the line or the field.</summary>
public sealed class SimulationTraceException : Exception
{
    /// <summary>Creates one.</summary>
    public SimulationTraceException(string message)
        : base(message)
    {
    }

    /// <summary>Creates one with its cause.</summary>
    public SimulationTraceException(string message, Exception inner)
        : base(message, inner)
    {
    }

    /// <summary>Creates one.</summary>
    public SimulationTraceException()
    {
    }
}

internal sealed class TraceDto
{
    public string? Name { get; set; }

    public string? Description { get; set; }

    public ulong? Seed { get; set; }

    public double? StartDelay { get; set; }

    public double? DrainTime { get; set; }

    public int? WarmPool { get; set; }

    public double? WarmDelay { get; set; }

    public int? Duration { get; set; }

    public Dictionary<string, int>? InitialNodes { get; set; }

    public Dictionary<string, NodeClassDto?>? NodeClasses { get; set; }

    public PolicyDto? Policy { get; set; }

    public List<JobDto?>? Jobs { get; set; }
}

internal sealed class NodeClassDto
{
    public JsonElement? Bandwidth { get; set; }

    public JsonElement? Capacity { get; set; }

    public double? CpuAtFullBandwidth { get; set; }
}

internal sealed class PolicyDto
{
    public double? Lower { get; set; }

    public double? Upper { get; set; }

    public int? MinNodes { get; set; }

    public int? MaxNodes { get; set; }

    public double? Cooldown { get; set; }

    public double? Lead { get; set; }

    public List<string?>? Resources { get; set; }
}

internal sealed class JobDto
{
    public string? Name { get; set; }

    public double? Start { get; set; }

    public string? Tier { get; set; }

    public double? Noise { get; set; }

    public bool? Hints { get; set; }

    public List<PointDto?>? Profile { get; set; }
}

internal sealed class PointDto
{
    public double? At { get; set; }

    public JsonElement? Throughput { get; set; }

    public JsonElement? Capacity { get; set; }
}

[JsonSourceGenerationOptions(
    PropertyNamingPolicy = JsonKnownNamingPolicy.CamelCase,
    UnmappedMemberHandling = JsonUnmappedMemberHandling.Disallow,
    ReadCommentHandling = JsonCommentHandling.Skip,
    AllowTrailingCommas = true)]
[JsonSerializable(typeof(TraceDto))]
internal sealed partial class TraceJsonContext : JsonSerializerContext;
