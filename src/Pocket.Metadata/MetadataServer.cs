using Microsoft.Extensions.Logging;
using Pocket.Metadata.Drain;
using Pocket.Metadata.Nodes;
using Pocket.Networking;
using Pocket.Protocol;
using Pocket.Protocol.Messages;

namespace Pocket.Metadata;

/// <summary>
/// The metadata server: jobs and their namespaces, weighted block placement, small objects inline, and the
/// registry of storage nodes with their liveness. The state lives in <see cref="MetadataState"/> behind one lock;
/// the handlers here decode a request, call the state and encode its result, and never take the lock themselves.
/// Drains run in a <see cref="DrainCoordinator"/>.
/// </summary>
public sealed partial class MetadataServer : IAsyncDisposable, IFrameHandler
{
    private readonly MetadataServerOptions _options;
    private readonly ILogger _logger;
    private readonly MetadataState _state;
    private readonly StorageLinks _links;
    private readonly DrainCoordinator _drains;
    private readonly ExtentRevoker _revoker;
    private ITimer? _revokeTimer;
    private int _retrying;
    private int _sealRequests;

    // The load the controller reads (ServerLoad): job requests handled and the monotonic start the CPU time is read against.
    private long _jobRequests;
    private readonly long _startedAt = System.Diagnostics.Stopwatch.GetTimestamp();

    /// <summary>The drain coordinator (its byte counts, for tests).</summary>
    internal DrainCoordinator Drains => _drains;

    private FrameServer? _server;
    private ITimer? _livenessTimer;
    private ITimer? _retireTimer;
    private ITimer? _inlineTrimTimer;
    private int _trimming;
    private int _trimmingInline;

    public MetadataServer(MetadataServerOptions options, ILoggerFactory loggerFactory)
    {
        options.Validate();
        _options = options;
        _logger = loggerFactory.CreateLogger<MetadataServer>();
        _state = new MetadataState(options, _logger);
        _links = new StorageLinks(_state.AddressOf, options.StorageConnection);
        _drains = new DrainCoordinator(_state, _links, options.ClusterToken, options.TimeProvider, _logger);

        // A revocation a node missed is worth retrying while the grants it revokes may still be used.
        _revoker = new ExtentRevoker(_state, _links, options.RevokeTimeout, options.GrantLifetime + TimeSpan.FromMinutes(1), options.TimeProvider, _logger);
    }

    public System.Net.IPEndPoint EndPoint => _server?.EndPoint ?? throw new InvalidOperationException("not started");

    /// <summary>The inline objects' slots (tests: what is mapped before and after a stop).</summary>
    internal InlineStore Inline => _state.Inline;

    /// <summary>
    /// Completes once the inline slots are unmapped after <see cref="DisposeAsync"/>: at once, or when the last handler
    /// held past the listener's stop timeout has returned (see <see cref="FrameServer.Stopped"/>).
    /// </summary>
    internal Task InlineReleased { get; private set; } = Task.CompletedTask;

    /// <summary>The listener (connection counts and buffered bytes, for tests and metrics).</summary>
    internal FrameServer Listener => _server ?? throw new InvalidOperationException("not started");

    /// <summary>Raised (outside the lock) when a node is declared dead.</summary>
    public event Action<uint, string>? NodeDied;

    public Task StartAsync(CancellationToken cancellationToken = default)
    {
        _server = new FrameServer("metadata", _options.Listener, this, _logger);
        _server.Start();
        MetadataLog.MemoryBounds(
            _logger,
            _options.EffectiveMaxObjectMemory,
            _options.MaxObjectMemory is null ? "default: half the memory the process may use" : "set",
            _options.EffectiveInlineCapacity,
            _options.InlineCapacity is null ? $"default: a quarter of the object memory, at most {MetadataServerOptions.DefaultInlineCapacityCap >> 20} MiB" : "set");
        _livenessTimer = _options.TimeProvider.CreateTimer(_ => Died(_state.CheckLiveness()), null, TimeSpan.FromSeconds(1), TimeSpan.FromSeconds(1));

        // Frees nobody waits for (a closed connection's open writes, a deregistered job's objects, a finished drain) and
        // retries reach the nodes within a second.
        _revokeTimer = _options.TimeProvider.CreateTimer(_ => _ = RetryRevocationsAsync(), null, TimeSpan.FromSeconds(1), TimeSpan.FromSeconds(1));

        // Inline slots free for a while go back to the system (InlineStore.IdleRelease).
        _inlineTrimTimer = _options.TimeProvider.CreateTimer(_ => TrimInline(idleOnly: true), null, TimeSpan.FromSeconds(1), TimeSpan.FromSeconds(1));
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
            case Opcode.ReleaseShare:
                HandleReleaseShare(frame);
                return;
            case Opcode.AddShare:
                HandleAddShare(frame);
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
            case Opcode.ServerLoad:
                HandleServerLoad(frame);
                return;
        }

        if (opcode is < Opcode.PutSmall or > Opcode.Count)
        {
            frame.ReplyError(Status.UnknownOpcode, $"metadata server does not handle opcode {(byte)opcode}");
            return;
        }

        if (_state.FindJob(frame.Header.Token) is not { } job)
        {
            var (status, message) = _state.UnknownToken(frame.Header.Token);
            frame.ReplyError(status, message);
            return;
        }

        Interlocked.Increment(ref _jobRequests);
        switch (opcode)
        {
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

    void IFrameHandler.OnDisconnected(FrameContext connection) => Died(_state.ConnectionClosed(connection.ConnectionId));

    /// <summary>A connection with open handles (a large put or get between its steps) is not closed as idle.</summary>
    bool IFrameHandler.HoldsState(FrameContext connection) => _state.HoldsHandles(connection.ConnectionId);

    /// <summary>
    /// Asked for frames whose body is over <see cref="FrameContext.InlineBody"/> before any of it is read: only the
    /// cluster token or a live job's token gets a large body buffered; anyone else is answered and disconnected.
    /// </summary>
    FrameAdmission IFrameHandler.Admit(FrameContext frame)
    {
        if (frame.Header.BodyLength > FrameContext.InlineBody && !IsAdmin(frame, out _) && !_state.IsJobToken(frame.Header.Token))
        {
            frame.Refuse(Status.Unauthorized, $"a body of {frame.Header.BodyLength} bytes needs a job token or the cluster token");
        }

        return Revokes(frame.Header.Opcode) ? FrameAdmission.Blocking : FrameAdmission.Buffer;
    }

    /// <summary>Abort and Delete wait for storage nodes to forget extents, so they are admitted here to run on the I/O pool.</summary>
    int IFrameHandler.PrefixLength(in FrameHeader header) => Revokes(header.Opcode) ? 0 : -1;

    /// <summary>
    /// Abort and Delete reply only once the nodes forgot the space (the next owner's data must never be reachable with
    /// the old grants). Commit does not wait: see <see cref="SealSoon"/>.
    /// </summary>
    private static bool Revokes(Opcode opcode) => opcode is Opcode.Abort or Opcode.Delete;

    /// <summary>
    /// Sends the seals (and forgets of unused space) a Commit queued, off the reply path: one background pass at a time,
    /// repeated while commits keep queueing more. Until a node has the seal, the first read with a read-only grant seals
    /// the extent on the node itself, so no reader can see a write that came after the commit and another read; all the
    /// writer can do in between is change bytes nobody has read, which it could have done before committing. Waiting for
    /// the seal cost a 1 KiB put through a node 113 -> 207 us p50 (docs/benchmarks.md, "Sealing grants at Commit").
    /// </summary>
    private static readonly Action<object?> SealSoonCallback = static server => ((MetadataServer)server!).SealSoon();

    private void SealSoon()
    {
        if (Interlocked.Increment(ref _sealRequests) == 1)
        {
            _ = Task.Run(SealAsync);
        }
    }

    private async Task SealAsync()
    {
        var seen = Volatile.Read(ref _sealRequests);
        while (true)
        {
            try
            {
                await _revoker.FlushAsync(CancellationToken.None).ConfigureAwait(false);
            }
            catch (Exception ex)
            {
                // What a node did not take stays with the revoker's retries; the grants expire anyway.
                MetadataLog.RevokeFailed(_logger, 0, 0, ex.Message);
            }

            if (Interlocked.CompareExchange(ref _sealRequests, 0, seen) == seen)
            {
                return;
            }

            seen = Volatile.Read(ref _sealRequests);
        }
    }

    private async Task RetryRevocationsAsync()
    {
        if (Interlocked.Exchange(ref _retrying, 1) != 0)
        {
            return;
        }

        try
        {
            await _revoker.RetryAsync(CancellationToken.None).ConfigureAwait(false);
        }
        catch (Exception ex)
        {
            MetadataLog.RevokeFailed(_logger, 0, 0, ex.Message);
        }
        finally
        {
            Volatile.Write(ref _retrying, 0);
        }
    }

    /// <summary>
    /// Waits until the storage nodes sealed or forgot what the operation just queued (Abort and Delete run on the
    /// I/O pool for this: see <see cref="IFrameHandler.Admit"/>). A node that does not answer is left to the retries.
    /// </summary>
    private void Revoke() => _revoker.FlushAsync(CancellationToken.None).GetAwaiter().GetResult();

    /// <summary>Logs and announces nodes the state declared dead; called after the lock is released.</summary>
    private void Died(List<NodeDeath> died)
    {
        foreach (var (id, reason) in died)
        {
            MetadataLog.NodeDead(_logger, id, reason);
            NodeDied?.Invoke(id, reason);
        }
    }

    /// <summary>
    /// The server's load for the controller's metadata-plane scaling: counters since start, which the controller turns
    /// into CPU per second and requests per second over its own interval. CPU is the process's: servers that share a
    /// process (an in-process cluster) each report all of it.
    /// </summary>
    private void HandleServerLoad(FrameContext frame)
    {
        if (!IsAdmin(frame, out var error))
        {
            frame.ReplyError(Status.Unauthorized, error);
            return;
        }

        if (!frame.ReadBody().IsEmpty)
        {
            BadBody(frame, "ServerLoad");
            return;
        }

        var (heldObjects, heldInline) = _state.Held();
        var load = new ServerLoad(
            Environment.CpuUsage.TotalTime.TotalSeconds,
            System.Diagnostics.Stopwatch.GetElapsedTime(_startedAt).TotalSeconds,
            Interlocked.Read(ref _jobRequests),
            Environment.ProcessorCount)
        {
            HeldObjects = heldObjects,
            HeldInlineBytes = heldInline,
        };
        var writer = new BodyWriter(ServerLoadReply.Size);
        ServerLoadReply.Write(writer, load);
        frame.Reply(Status.Ok, writer.WrittenSpan);
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

    /// <summary>True (after replying with its status and message) when the state refused the operation.</summary>
    private static bool Failed(FrameContext frame, Outcome outcome)
    {
        if (outcome.IsOk)
        {
            return false;
        }

        frame.ReplyError(outcome.Status, outcome.Message ?? outcome.Status.ToString());
        return true;
    }

    /// <inheritdoc cref="Failed(FrameContext, Outcome)"/>
    private static bool Failed<T>(FrameContext frame, in Result<T> result) => !result.IsOk && Failed(frame, result.Outcome);

    public async ValueTask DisposeAsync()
    {
        await _drains.DisposeAsync().ConfigureAwait(false);
        if (_revokeTimer is not null)
        {
            await _revokeTimer.DisposeAsync().ConfigureAwait(false);
        }

        await _links.DisposeAsync().ConfigureAwait(false);
        if (_retireTimer is not null)
        {
            await _retireTimer.DisposeAsync().ConfigureAwait(false);
        }

        if (_livenessTimer is not null)
        {
            await _livenessTimer.DisposeAsync().ConfigureAwait(false);
        }

        if (_inlineTrimTimer is not null)
        {
            await _inlineTrimTimer.DisposeAsync().ConfigureAwait(false);
        }

        // The inline slots are unmapped once no request can read them any more: a get between its lookup and its reply's
        // copy, or a put copying into its slot, would otherwise touch unmapped memory, which ends the process. A handler
        // held past the listener's stop timeout keeps them mapped until it returns (for good if it never does).
        _server?.Dispose();
        InlineReleased = FrameServer.ReleaseWhenStoppedAsync(_server, _state.Inline.Dispose);
    }
}
