using System.Globalization;
using Pocket.Controller.Jobs;
using Pocket.Controller.Scaling;

namespace Pocket.Controller.Simulation;

/// <summary>
/// How the simulator models the metadata plane (<see cref="SimulationTrace.Metadata"/>). The traces give each job's
/// data rate, not its metadata requests, so the model assumes a job moves its data as objects of
/// <see cref="ObjectBytes"/>, each costing <see cref="RequestsPerObject"/> metadata requests (a put is a Create and a
/// Commit, a get one Get), and that a request costs <see cref="CpuPerRequest"/> of a metadata server's core (~22 us
/// measured per metadata op, docs/benchmarks.md "Metadata plane: 1 vs 2 servers"). Jobs of small objects make far more
/// requests per byte: lower <see cref="ObjectBytes"/> to model them.
/// </summary>
public sealed record MetadataModelOptions
{
    /// <summary>Servers the plane starts with and never goes below.</summary>
    public int MinServers { get; init; } = 1;

    /// <summary>Most servers; at <see cref="MinServers"/> (the default) the plane keeps its size.</summary>
    public int MaxServers { get; init; } = 1;

    /// <summary>Bytes per object a job moves (each costs <see cref="RequestsPerObject"/> metadata requests).</summary>
    public long ObjectBytes { get; init; } = 1L << 20;

    /// <summary>Metadata requests per object moved.</summary>
    public double RequestsPerObject { get; init; } = 2;

    /// <summary>Metadata server CPU per request.</summary>
    public TimeSpan CpuPerRequest { get; init; } = TimeSpan.FromTicks(220);

    /// <summary>From the decision to a started server taking jobs (process start and the nodes joining it).</summary>
    public TimeSpan StartDelay { get; init; } = TimeSpan.FromSeconds(2);

    /// <summary>The band and its timings, as the live controller's.</summary>
    public MetadataScalingOptions Band { get; init; } = new();

    /// <summary>Throws <see cref="ArgumentException"/> naming the first bad setting.</summary>
    public void Validate()
    {
        Band.Validate();
        if (MinServers < 1 || MaxServers < MinServers || ObjectBytes <= 0 || RequestsPerObject <= 0 || CpuPerRequest <= TimeSpan.Zero || StartDelay < TimeSpan.Zero)
        {
            throw new ArgumentException("metadata model: need 1 <= min servers <= max servers, a positive object size, requests per object and CPU per request");
        }
    }
}

/// <summary>What the metadata-plane model measured over a simulation.</summary>
/// <param name="ServerSeconds">Sum over the seconds of the metadata servers running (starting and draining included).</param>
/// <param name="PeakServers">The most servers at once.</param>
/// <param name="PeakRequestsPerSecond">The highest metadata request rate of the jobs, all servers together.</param>
/// <param name="OverloadedSeconds">Seconds in which some server was asked for more than one core of work (its jobs wait: one server has one lock).</param>
/// <param name="ServersBySecond">The servers running at each second.</param>
public sealed record MetadataPlaneResult(double ServerSeconds, int PeakServers, double PeakRequestsPerSecond, int OverloadedSeconds, IReadOnlyList<int> ServersBySecond);

/// <summary>
/// The metadata plane in the simulator: each job is placed at its start on a serving server as the controller places
/// it (<see cref="MetadataPlane.Choose"/>); each second every server's requests and CPU follow from its running jobs'
/// data rates (<see cref="MetadataModelOptions"/>), and <see cref="MetadataScalingPolicy.Decide"/>, the live
/// controller's policy, adds a server (serving after the start delay), takes a draining one back, or drains one, which
/// stops once its jobs have ended. Deterministic.
/// </summary>
internal sealed class MetadataPlaneModel
{
    private readonly MetadataModelOptions _options;
    private readonly List<Server> _servers = [];
    private readonly Dictionary<int, Server> _jobServer = [];
    private readonly List<int> _bySecond = [];
    private MetadataScalingState _state = MetadataScalingState.Initial;
    private double _serverSeconds;
    private double _peakRequests;
    private int _overloaded;
    private int _nextId;

    private sealed class Server(int id)
    {
        public int Id { get; } = id;

        public double ReadyAt { get; set; }

        public bool Draining { get; set; }

        public double Requests { get; set; }

        public double LastRequests { get; set; }

        public int Jobs { get; set; }

        public string Address => string.Create(CultureInfo.InvariantCulture, $"metadata-{Id}");
    }

    public MetadataPlaneModel(MetadataModelOptions options)
    {
        options.Validate();
        _options = options;
        for (var i = 0; i < options.MinServers; i++)
        {
            _servers.Add(new Server(_nextId++));
        }
    }

    /// <summary>One simulated second: <paramref name="jobs"/> holds each running job's index and data rate (bits per second).</summary>
    public void Step(int second, IReadOnlyList<(int Job, double BitsPerSecond)> jobs, List<SimulationEvent> events)
    {
        var serving = _servers.Where(s => !s.Draining && s.ReadyAt <= second).ToList();
        foreach (var server in _servers)
        {
            server.LastRequests = server.Requests;
            server.Requests = 0;
            server.Jobs = 0;
        }

        foreach (var (job, bits) in jobs)
        {
            if (!_jobServer.TryGetValue(job, out var server))
            {
                // As the controller: by last second's CPU, then jobs placed.
                var load = serving.Select(s => new MetadataLoad(_jobServer.Values.Count(v => v == s), 0, Cpu(s.LastRequests))).ToList();
                server = _jobServer[job] = serving.Count > 0 ? serving[MetadataPlane.Choose(load)] : _servers[0];
            }

            server.Requests += bits / 8 / _options.ObjectBytes * _options.RequestsPerObject;
            server.Jobs++;
        }

        foreach (var gone in _jobServer.Keys.Where(j => !jobs.Any(r => r.Job == j)).ToList())
        {
            _jobServer.Remove(gone);
        }

        _peakRequests = Math.Max(_peakRequests, _servers.Sum(s => s.Requests));
        if (_servers.Any(s => Cpu(s.Requests) > 1))
        {
            _overloaded++;
        }

        // A draining server whose jobs have ended stops (the live controller also waits for kept objects; none here).
        foreach (var done in _servers.Where(s => s.Draining && s.Jobs == 0).ToList())
        {
            _servers.Remove(done);
            events.Add(new SimulationEvent(second, "metadata-stopped", null, $"{done.Address} had no job left: stopped"));
        }

        var now = ClusterSimulator.Epoch + TimeSpan.FromSeconds(second);
        var samples = _servers
            .Where(s => s.ReadyAt <= second)
            .Select((s, i) => new MetadataServerSample(s.Address, s.Draining, Math.Min(1, Cpu(s.Requests)), s.Requests, s.Jobs, Removable: i >= _options.MinServers))
            .ToList();
        var joining = _servers.Any(s => s.ReadyAt > second);
        (var decision, _state) = MetadataScalingPolicy.Decide(samples, _options.MinServers, _options.MaxServers, joining, _options.Band, _state, now);
        switch (decision.Action)
        {
            case MetadataScalingAction.AddServer:
                var added = new Server(_nextId++) { ReadyAt = second + _options.StartDelay.TotalSeconds };
                _servers.Add(added);
                events.Add(new SimulationEvent(second, "metadata-scale-up", null, $"{decision.Reason}: {added.Address}"));
                break;
            case MetadataScalingAction.ResumeServer:
                _servers.First(s => s.Address == decision.Address).Draining = false;
                events.Add(new SimulationEvent(second, "metadata-resumed", null, decision.Reason));
                break;
            case MetadataScalingAction.DrainServer:
                _servers.First(s => s.Address == decision.Address).Draining = true;
                events.Add(new SimulationEvent(second, "metadata-draining", null, decision.Reason));
                break;
        }

        _serverSeconds += _servers.Count;
        _bySecond.Add(_servers.Count);
    }

    /// <summary>Whether the plane is back at its minimum with nothing starting or draining: it has no more to do once the jobs have ended.</summary>
    public bool AtRest => _servers.Count <= _options.MinServers && !_servers.Any(s => s.Draining);

    /// <summary>
    /// The longest the plane can take to get back to its minimum after the last job ends: a start under way, then one
    /// cooldown before each drain (a drained server with no job stops at once here), plus one for the band's own wait.
    /// </summary>
    public TimeSpan SettleTime => _options.StartDelay + (_options.Band.Cooldown * (_options.MaxServers - _options.MinServers + 1));

    private double Cpu(double requests) => requests * _options.CpuPerRequest.TotalSeconds;

    public MetadataPlaneResult Result() => new(_serverSeconds, _bySecond.Count == 0 ? _servers.Count : _bySecond.Max(), _peakRequests, _overloaded, _bySecond);
}
