using Microsoft.Extensions.Logging;
using Pocket.Networking;
using Pocket.Protocol;

namespace Pocket.Metadata;

/// <summary>
/// The metadata server: jobs and their namespaces, weighted block placement, small objects inline, and the
/// registry of storage nodes with their liveness. All state sits behind one lock; each operation holds it
/// for microseconds and never across I/O.
/// </summary>
public sealed partial class MetadataServer : IAsyncDisposable, IFrameHandler
{
    private readonly MetadataServerOptions _options;
    private readonly ILogger _logger;
    private readonly Lock _lock = new();
    private readonly Dictionary<uint, NodeEntry> _nodes = [];
    private readonly Dictionary<string, JobEntry> _jobsById = new(StringComparer.Ordinal);
    private readonly Dictionary<JobToken, JobEntry> _jobsByToken = [];
    private readonly Dictionary<ulong, OpenHandle> _handles = [];
    private readonly Dictionary<string, int> _jobCounters = new(StringComparer.Ordinal);
    private readonly CancellationTokenSource _stop = new();
    private FrameServer? _server;
    private ITimer? _livenessTimer;
    private uint _nextNodeId;
    private ulong _nextHandle;
    private long _inlineBytes;

    public MetadataServer(MetadataServerOptions options, ILoggerFactory loggerFactory)
    {
        options.Validate();
        _options = options;
        _logger = loggerFactory.CreateLogger<MetadataServer>();
    }

    public System.Net.IPEndPoint EndPoint => _server?.EndPoint ?? throw new InvalidOperationException("not started");

    /// <summary>Raised (outside the lock) when a node is declared dead.</summary>
    public event Action<uint, string>? NodeDied;

    public Task StartAsync(CancellationToken cancellationToken = default)
    {
        _server = new FrameServer("metadata", _options.Listener, this, _logger);
        _server.Start();
        _livenessTimer = _options.TimeProvider.CreateTimer(_ => CheckLiveness(), null, TimeSpan.FromSeconds(1), TimeSpan.FromSeconds(1));
        return Task.CompletedTask;
    }

    void IFrameHandler.Handle(FrameContext frame)
    {
        var opcode = frame.Header.Opcode;
        switch (opcode)
        {
            case Opcode.Ping:
                frame.Reply(Status.Ok);
                return;
            case Opcode.RegisterNode:
                HandleRegisterNode(frame);
                return;
            case Opcode.Heartbeat:
                HandleHeartbeat(frame);
                return;
            case Opcode.ListNodes:
                HandleListNodes(frame);
                return;
            case Opcode.RegisterJob:
                HandleRegisterJob(frame);
                return;
            case Opcode.DeregisterJob:
                HandleDeregisterJob(frame);
                return;
            case Opcode.SetWeights:
                HandleSetWeights(frame);
                return;
            case Opcode.JobStats:
                HandleJobStats(frame);
                return;
            case Opcode.DrainNode:
                HandleDrainNode(frame);
                return;
            case Opcode.ActivateNode:
                HandleActivateNode(frame);
                return;
        }

        if (opcode is < Opcode.PutSmall or > Opcode.Count)
        {
            frame.ReplyError(Status.UnknownOpcode, $"metadata server does not handle opcode {(byte)opcode}");
            return;
        }

        JobEntry? job;
        lock (_lock)
        {
            _jobsByToken.TryGetValue(frame.Header.Token, out job);
            if (job is not null)
            {
                job.Requests++;
            }
        }

        if (job is null)
        {
            frame.ReplyError(Status.Unauthorized, "unknown job token");
            return;
        }

        switch (opcode)
        {
            case Opcode.PutSmall or Opcode.Create or Opcode.Allocate when RejectIfRetired(frame, job):
                break;
            case Opcode.PutSmall:
                HandlePutSmall(frame, job);
                break;
            case Opcode.Get:
                HandleGet(frame, job);
                break;
            case Opcode.Create:
                HandleCreate(frame, job);
                break;
            case Opcode.Allocate:
                HandleAllocate(frame, job);
                break;
            case Opcode.Commit:
                HandleCommit(frame, job);
                break;
            case Opcode.Abort:
                HandleAbort(frame, job);
                break;
            case Opcode.Lookup:
                HandleLookup(frame, job);
                break;
            case Opcode.Delete:
                HandleDelete(frame, job);
                break;
            case Opcode.List:
                HandleList(frame, job);
                break;
            case Opcode.Count:
                HandleCount(frame, job);
                break;
            default:
                frame.ReplyError(Status.UnknownOpcode, $"metadata server does not handle opcode {(byte)opcode}");
                break;
        }
    }

    void IFrameHandler.OnDisconnected(FrameContext connection)
    {
        var died = new List<(uint, string)>();
        lock (_lock)
        {
            foreach (var handle in _handles.Values.Where(h => h.ConnectionId == connection.ConnectionId).ToList())
            {
                ReleaseHandle(handle);
            }

            foreach (var node in _nodes.Values.ToList())
            {
                if (node.ConnectionId == connection.ConnectionId && node.State is NodeState.Drained or NodeState.Standby)
                {
                    // A drained node stopping is the end of a planned removal, not a failure; a standby node never held a block.
                    _nodes.Remove(node.Id);
                    MetadataLog.NodeRemoved(_logger, node.Id);
                }
                else if (node.ConnectionId == connection.ConnectionId && node.State != NodeState.Dead)
                {
                    // A storage node's registration connection closing means its process ended.
                    node.State = NodeState.Dead;
                    died.Add((node.Id, "its connection to the metadata server closed"));
                }
            }
        }

        foreach (var (id, reason) in died)
        {
            MetadataLog.NodeDead(_logger, id, reason);
            NodeDied?.Invoke(id, reason);
        }
    }

    /// <summary>A connection with open handles (a large put or get between its steps) is not closed as idle.</summary>
    bool IFrameHandler.HoldsState(FrameContext connection)
    {
        lock (_lock)
        {
            return _handles.Values.Any(h => h.ConnectionId == connection.ConnectionId);
        }
    }

    private bool IsAdmin(FrameContext frame, out string error)
    {
        error = string.Empty;
        if (_options.ClusterToken.IsNone || frame.Header.Token == _options.ClusterToken)
        {
            return true;
        }

        error = "this operation needs the cluster token";
        return false;
    }

    private static void BadBody(FrameContext frame, string what) => frame.ReplyError(Status.BadRequest, $"malformed {what} request body");

    public async ValueTask DisposeAsync()
    {
        await _stop.CancelAsync().ConfigureAwait(false);
        await StopDrainsAsync().ConfigureAwait(false);
        if (_retireTimer is not null)
        {
            await _retireTimer.DisposeAsync().ConfigureAwait(false);
        }

        if (_livenessTimer is not null)
        {
            await _livenessTimer.DisposeAsync().ConfigureAwait(false);
        }

        _server?.Dispose();
        _stop.Dispose();
    }
}
