using System.Diagnostics;
using System.Security.Cryptography;
using Microsoft.Extensions.Logging;
using Pocket.Networking;
using Pocket.Protocol;
using Pocket.Protocol.Messages;
using Pocket.Storage;

namespace Pocket.StorageServer;

/// <summary>
/// A storage node: a block store on one device behind a frame server. Clients write and read extents with
/// grants signed by the metadata server; the node registers itself and reports load every heartbeat.
/// </summary>
public sealed partial class StorageServer : IAsyncDisposable, IFrameHandler
{
    private readonly StorageServerOptions _options;
    private readonly ILogger _logger;
    private readonly byte[] _secret = RandomNumberGenerator.GetBytes(32);
    private readonly CancellationTokenSource _stop = new();
    private readonly TaskCompletionSource _servingAll = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private BlockStore? _store;
    private ReadBuffers? _readBuffers;
    private FrameServer? _server;
    private FrameConnection? _metadata;
    private Task? _heartbeats;
    private long _bytesIn;
    private long _bytesOut;
    private long _requests;
    private int _liveBuffers;
    private double _cpuShare;

    // Connections to the storage nodes this node copies from (CopyExtent); see StorageServer.Copy.cs.
    private readonly PeerConnections _peers;

    public StorageServer(StorageServerOptions options, ILoggerFactory loggerFactory)
    {
        options.Validate();
        _options = options;
        _logger = loggerFactory.CreateLogger<StorageServer>();
        _peers = new PeerConnections(options.PeerConnection, options.MaxPeerConnections);
        LoggerFactory = loggerFactory;
    }

    private ILoggerFactory LoggerFactory { get; }

    /// <summary>The node id the metadata server gave this node (0 before registration).</summary>
    public uint NodeId { get; private set; }

    /// <summary>
    /// Completes once the node serves every metadata server it was given: registered with it and, with several, each
    /// holding part of the node. A registration that runs past its bound (a loaded machine) leaves that server to a
    /// later round, and a job placed there meanwhile would find no share of this node; whoever starts a cluster and
    /// hands it out at once (the embedded cluster) waits for this.
    /// </summary>
    public Task ServingAllMetadataServers => _servingAll.Task;

    public System.Net.IPEndPoint EndPoint => _server?.EndPoint ?? throw new InvalidOperationException("not started");

    /// <summary>The listener (connection counts and buffered bytes, for tests and metrics).</summary>
    internal FrameServer Listener => _server ?? throw new InvalidOperationException("not started");

    public BlockStore Store => _store ?? throw new InvalidOperationException("not started");

    /// <summary>Gives freed memory and disk back and keeps a dram node's headroom faulted in.</summary>
    public SpaceReclaimer Reclaimer => _reclaimer ?? throw new InvalidOperationException("not started");

    private SpaceReclaimer? _reclaimer;

    /// <summary>The secret this node's grants are signed with (tests sign grants with it).</summary>
    internal ReadOnlySpan<byte> GrantSecret => _secret;

    /// <summary>The node's tier.</summary>
    public NodeTier Tier => _options.Tier;

    /// <summary>Connections open now (clients, the metadata server's drain copies).</summary>
    public int ConnectionCount => _server?.ConnectionCount ?? 0;

    /// <summary>Times a connection's requests were held back because its peer let replies wait unread.</summary>
    public long ReplyPauses => _server?.ReplyPauses ?? 0;

    /// <summary>Connections closed because their peer read none of its waiting replies for the stall timeout.</summary>
    public long StalledReaders => _server?.StalledReaders ?? 0;

    /// <summary>Bytes of request frames received so far (headers and bodies).</summary>
    public long BytesReceived => Interlocked.Read(ref _bytesIn);

    /// <summary>Bytes of reply frames sent so far (headers and bodies).</summary>
    public long BytesSent => Interlocked.Read(ref _bytesOut);

    /// <summary>The process's CPU share (0..1 of all cores) over the last heartbeat interval, as reported to the metadata server.</summary>
    public double CpuShare => Volatile.Read(ref _cpuShare);

    public async Task StartAsync(CancellationToken cancellationToken = default)
    {
        var device = _options.DeviceFactory?.Invoke(_options) ?? BlockDevices.Create(_options.Tier, _options.Capacity);
        _store = new BlockStore(device, _options.BlockSize);
        _readBuffers = new ReadBuffers(Math.Max(device.Alignment, 4096), ReadBuffersKept);
        _reclaimer = new SpaceReclaimer(_store, SpaceReclaimerOptions.For(device, _options.BlockSize, _options.DramHeadroom, _options.DramReleaseDelay), _options.TimeProvider);
        StorageLog.DeviceReady(_logger, device.Description);
        _server = new FrameServer("storage", _options.Listener, this, _logger);
        _server.Start();
        if (_options.OtherMetadata.Count > 0)
        {
            await StartSharedAsync(cancellationToken).ConfigureAwait(false);
        }
        else
        {
            await RegisterAsync(cancellationToken).ConfigureAwait(false);
        }

        _heartbeats = Task.Run(HeartbeatLoopAsync, CancellationToken.None);
    }

    private async Task RegisterAsync(CancellationToken cancellationToken)
    {
        _metadata?.Dispose();
        _metadata = await FrameConnection.ConnectAsync(_options.Metadata.Host, _options.Metadata.Port, _options.MetadataConnection, cancellationToken).ConfigureAwait(false);
        var host = _options.AdvertisedHost ?? _server!.EndPoint.Address.ToString();
        var body = new BodyWriter();
        RegisterNodeRequest.Write(body, _options.Tier, host, (ushort)_server!.EndPoint.Port, _store!.Capacity, _store.BlockSize, _secret, _options.Standby);

        // Drop the old identity and its blocks before the metadata server can grant writes under the new one,
        // so a write granted for the new id is never wiped by the reset (grants for id 0 do not exist).
        NodeId = 0;
        _store.Reset();
        var reply = await _metadata.SendAsync(Opcode.RegisterNode, FrameFlags.None, _options.ClusterToken, body.WrittenMemory, cancellationToken: cancellationToken).ConfigureAwait(false);
        if (!reply.IsOk)
        {
            throw new InvalidOperationException($"metadata server refused registration: {reply.Message}");
        }

        if (!RegisterNodeReply.TryRead(reply.Body, out var nodeId))
        {
            throw new InvalidOperationException("metadata server sent a malformed registration reply");
        }

        NodeId = nodeId;
        StorageLog.Registered(_logger, NodeId, $"{host}:{_server.EndPoint.Port}", _options.Tier.ToString(), _store.Capacity);
        _servingAll.TrySetResult();
    }

    private async Task HeartbeatLoopAsync()
    {
        using var timer = new PeriodicTimer(_options.HeartbeatInterval, _options.TimeProvider);
        var process = Process.GetCurrentProcess();
        var lastCpu = process.TotalProcessorTime;
        var lastTime = _options.TimeProvider.GetTimestamp();
        long lastIn = 0, lastOut = 0;
        try
        {
            while (await timer.WaitForNextTickAsync(_stop.Token).ConfigureAwait(false))
            {
                process.Refresh();
                var now = _options.TimeProvider.GetTimestamp();
                var seconds = Math.Max(_options.TimeProvider.GetElapsedTime(lastTime, now).TotalSeconds, 1e-3);
                var cpu = process.TotalProcessorTime;
                var cpuShare = (cpu - lastCpu).TotalSeconds / seconds / Environment.ProcessorCount;
                Volatile.Write(ref _cpuShare, Math.Clamp(cpuShare, 0, 1));
                var bytesIn = Interlocked.Read(ref _bytesIn);
                var bytesOut = Interlocked.Read(ref _bytesOut);
                var body = new BodyWriter();
                HeartbeatRequest.Write(body, new HeartbeatRequest(NodeId, Math.Clamp(cpuShare, 0, 1), (bytesIn - lastIn) / seconds, (bytesOut - lastOut) / seconds, Interlocked.Read(ref _requests)));
                (lastCpu, lastTime, lastIn, lastOut) = (cpu, now, bytesIn, bytesOut);
                if (Shared)
                {
                    try
                    {
                        await SharedTickAsync(new HeartbeatRequest(NodeId, Math.Clamp(cpuShare, 0, 1), (bytesIn - lastIn) / seconds, (bytesOut - lastOut) / seconds, Interlocked.Read(ref _requests)), _stop.Token).ConfigureAwait(false);
                    }
                    catch (Exception ex) when (ex is ConnectionLostException or RequestTimeoutException or InvalidOperationException)
                    {
                        StorageLog.HeartbeatFailed(_logger, ex.Message);
                    }

                    continue;
                }

                try
                {
                    if (_metadata is null || !_metadata.IsConnected)
                    {
                        await RegisterAsync(_stop.Token).ConfigureAwait(false);
                        continue;
                    }

                    var reply = await _metadata.SendAsync(Opcode.Heartbeat, FrameFlags.None, _options.ClusterToken, body.WrittenMemory, cancellationToken: _stop.Token).ConfigureAwait(false);
                    if (reply.Status == Status.NotFound)
                    {
                        // The metadata server forgot us (it restarted, or declared us dead): our blocks are gone
                        // from its namespace, so register afresh as a new, empty node.
                        StorageLog.Reregistering(_logger, NodeId, reply.Message);
                        await RegisterAsync(_stop.Token).ConfigureAwait(false);
                    }
                }
                catch (Exception ex) when (ex is ConnectionLostException or RequestTimeoutException or InvalidOperationException)
                {
                    StorageLog.HeartbeatFailed(_logger, ex.Message);
                }
            }
        }
        catch (OperationCanceledException)
        {
        }
    }

    void IFrameHandler.Handle(FrameContext frame)
    {
        Interlocked.Increment(ref _requests);
        Interlocked.Add(ref _bytesIn, FrameHeader.Size + frame.Header.BodyLength);
        switch (frame.Header.Opcode)
        {
            case Opcode.Ping:
                frame.Reply(Status.Ok);
                break;
            case Opcode.WriteExtent:
                HandleWrite(frame);
                break;
            case Opcode.ReadExtent:
                HandleRead(frame);
                break;
            case Opcode.CopyExtent when !_options.CopyExtentDisabled:
                HandleCopy(frame);
                break;
            case Opcode.RevokeExtents:
                HandleRevoke(frame);
                break;
            default:
                frame.ReplyError(Status.UnknownOpcode, $"storage server does not handle opcode {(byte)frame.Header.Opcode}");
                break;
        }
    }

    void IFrameHandler.OnDisconnected(FrameContext connection)
    {
        if (connection.State is ConnectionState { Buffer: { } buffer } state)
        {
            state.Buffer = null;
            FreeBuffer(buffer);
        }
    }

    private const int WriteHead = WriteExtentRequest.HeadSize;
    private const int ReadBody = ReadExtentRequest.Size;

    /// <summary>A write's grant and offset come first, and are checked before a byte of its data is read.</summary>
    int IFrameHandler.PrefixLength(in FrameHeader header) => header.Opcode switch
    {
        Opcode.WriteExtent => WriteHead,
        Opcode.ReadExtent => 0,
        Opcode.CopyExtent when !_options.CopyExtentDisabled => CopyExtentRequest.WriteGrantSize,
        _ => -1,
    };

    FrameAdmission IFrameHandler.Admit(FrameContext frame)
    {
        if (frame.Header.Opcode == Opcode.ReadExtent)
        {
            if (frame.BodyRemaining != ReadBody)
            {
                // Nothing but a grant, an offset and a length: a longer body is not read at all.
                var message = "read body must be grant, offset and length";
                if (frame.BodyRemaining > FrameContext.InlineBody)
                {
                    frame.Refuse(Status.BadRequest, message);
                }
                else
                {
                    frame.ReplyError(Status.BadRequest, message);
                }
            }

            return _store!.Device.IsDirect ? FrameAdmission.Buffer : FrameAdmission.Blocking;
        }

        if (frame.Header.Opcode == Opcode.CopyExtent)
        {
            return AdmitCopy(frame);
        }

        if (frame.Header.Opcode != Opcode.WriteExtent)
        {
            // Only a write carries a large body; anything else this large is refused before a byte of it is read.
            frame.Refuse(Status.FrameTooLarge, $"a body of {frame.Header.BodyLength} bytes is too large for opcode {(byte)frame.Header.Opcode}");
            return FrameAdmission.Buffer;
        }

        return AdmitWrite(frame);
    }

    /// <summary>
    /// Checks a write's grant from its prefix and claims the blocks; the data then goes straight into node memory
    /// (dram), or into the connection's aligned buffer and from there to the device on the I/O pool.
    /// </summary>
    private FrameAdmission AdmitWrite(FrameContext frame)
    {
        if (frame.BodyRemaining < WriteHead)
        {
            frame.ReplyError(Status.BadRequest, "write body shorter than grant and offset");
            return FrameAdmission.Buffer;
        }

        Span<byte> head = stackalloc byte[WriteHead];
        frame.ReadBodyInto(head);
        WriteExtentRequest.TryRead(head, out var grant, out var within);
        var length = frame.BodyRemaining;
        var status = CheckGrant(grant, GrantRights.Write, within, length, out var error);
        if (status == Status.Unauthorized && length > FrameContext.InlineBody)
        {
            // Not a byte of a large unauthorised body is read: answered, and the connection closed. A small one is
            // discarded as it arrives (nothing buffered), which costs the peer less than a new connection.
            frame.Refuse(status, error);
            return FrameAdmission.Buffer;
        }

        if (status != Status.Ok)
        {
            frame.ReplyError(status, error);
            return FrameAdmission.Buffer;
        }

        var store = _store!;
        var offset = grant.Offset + within;
        if (length == 0)
        {
            frame.Reply(Status.Ok);
            return FrameAdmission.Buffer;
        }

        if (store.BeginWrite(offset, length, grant.Generation) != BlockResult.Ok)
        {
            Interlocked.Increment(ref _staleWrites);
            frame.ReplyError(Status.StaleGrant, "extent was reallocated or is being written by another request");
            return FrameAdmission.Buffer;
        }

        var state = StateOf(frame);
        (state.Offset, state.Length, state.Generation) = (offset, length, grant.Generation);
        if (store.Device.IsDirect)
        {
            return FrameAdmission.Direct;
        }

        ConnectionBuffer(frame, length);
        return FrameAdmission.Direct | FrameAdmission.Blocking;
    }

    Span<byte> IFrameHandler.BodyDestination(FrameContext frame, int received)
    {
        var state = (ConnectionState)frame.State!;
        return _store!.Device.IsDirect
            ? _store.Device.GetSpan(state.Offset + received, state.Length - received)
            : state.Buffer!.GetSpan()[received..state.Length];
    }

    void IFrameHandler.Abandon(FrameContext frame)
    {
        var state = (ConnectionState)frame.State!;
        _store!.EndWrite(state.Offset, state.Length, state.Generation);
    }

    /// <summary>The write's data is in (in node memory, or in the connection buffer for a device that is not directly addressable).</summary>
    private void HandleWrite(FrameContext frame)
    {
        var state = (ConnectionState)frame.State!;
        var store = _store!;
        DeviceException? deviceError = null;
        try
        {
            if (!store.Device.IsDirect)
            {
                store.Device.Write(state.Offset, state.Buffer!.GetSpan()[..state.Length]);
            }
        }
        catch (DeviceException ex)
        {
            deviceError = ex;
        }
        finally
        {
            store.EndWrite(state.Offset, state.Length, state.Generation);
        }

        if (deviceError is not null)
        {
            StorageLog.DeviceFailed(_logger, deviceError.Message);
            frame.ReplyError(deviceError.IsNoSpace ? Status.CapacityExceeded : Status.IoError, deviceError.Message);
            return;
        }

        frame.Reply(Status.Ok);
    }

    private void HandleRead(FrameContext frame)
    {
        if (!ReadExtentRequest.TryRead(frame.ReadBody(), out var grant, out var within, out var length))
        {
            frame.ReplyError(Status.BadRequest, "read body must be grant, offset and length");
            return;
        }

        var status = CheckGrant(grant, GrantRights.Read, within, length, out var error);
        if (status != Status.Ok)
        {
            frame.ReplyError(status, error);
            return;
        }

        // Only a committed allocation gets read-only grants, so using one proves the commit: seal it here if the
        // metadata server's seal has not arrived yet, so that no reader ever sees a write that came after another
        // read (docs/protocol.md, "Grants"). Once sealed this is one load per block.
        if ((grant.Rights & GrantRights.Write) == 0)
        {
            _store!.Seal(grant.Offset, grant.Length, grant.Generation);
        }

        // A read up to ReadBuffers.MaxPooled borrows a warm buffer shared by all connections, given back once the
        // reply is written (or copied into the connection's reply buffer); a longer one uses the connection's own.
        var pooled = length <= ReadBuffers.MaxPooled ? _readBuffers!.Rent(length) : null;
        try
        {
            var buffer = (pooled ?? ConnectionBuffer(frame, length)).GetSpan()[..length];
            BlockResult read;
            try
            {
                read = _store!.Read(grant.Offset + within, buffer, grant.Generation);
            }
            catch (DeviceException ex)
            {
                StorageLog.DeviceFailed(_logger, ex.Message);
                frame.ReplyError(Status.IoError, ex.Message);
                return;
            }

            if (read != BlockResult.Ok)
            {
                frame.ReplyError(Status.StaleGrant, "extent no longer holds this allocation (deleted or reused)");
                return;
            }

            Interlocked.Add(ref _bytesOut, FrameHeader.Size + length);
            frame.Reply(Status.Ok, default, buffer);
        }
        finally
        {
            if (pooled is not null)
            {
                _readBuffers!.Return(pooled);
            }
        }
    }

    /// <summary>Bytes of read buffers kept warm between reads (<see cref="ReadBuffers"/>).</summary>
    private const long ReadBuffersKept = 8L << 20;

    /// <summary>Read buffers made so far (tests).</summary>
    internal long ReadBuffersAllocated => _readBuffers?.Allocated ?? 0;

    /// <summary>Read buffers a handler holds now (tests: it gives one back only after its reply is sent).</summary>
    internal int ReadBuffersRented => _readBuffers?.Rented ?? 0;

    private long _staleWrites;

    /// <summary>Writes refused because a block was reallocated or busy with another write (tests).</summary>
    internal long StaleWrites => Interlocked.Read(ref _staleWrites);

    /// <summary>
    /// RevokeExtents from the metadata server: seals committed extents and forgets freed ones. Signed with this node's
    /// secret, so nobody else can revoke; a forged, misaddressed or malformed request changes nothing.
    /// </summary>
    private void HandleRevoke(FrameContext frame)
    {
        var status = RevokeExtentsRequest.TryRead(frame.ReadBody(), _secret, out var nodeId, out var entries);
        byte[]? signer = null;
        if (Shared)
        {
            // Signed by one of the servers; it may revoke only inside its own share (below).
            foreach (var secret in LinkSecrets)
            {
                status = RevokeExtentsRequest.TryRead(frame.ReadBody(), secret, out nodeId, out entries);
                if (status != Status.Unauthorized)
                {
                    signer = secret;
                    break;
                }
            }
        }

        if (status == Status.Ok && nodeId != NodeId)
        {
            status = Status.Unauthorized;
        }

        if (status != Status.Ok)
        {
            frame.ReplyError(status, status == Status.Unauthorized ? "revocation is not signed for this node" : "malformed revoke-extents body");
            return;
        }

        var store = _store!;
        foreach (var entry in entries)
        {
            if (entry.Kind is not (RevocationKind.Seal or RevocationKind.Forget) || !store.IsValidExtent(entry.Offset, entry.Length) || entry.Generation is 0 or > BlockStore.MaxGeneration)
            {
                frame.ReplyError(Status.BadRequest, $"revocation {entry} is not a valid extent of this node");
                return;
            }
        }

        foreach (var entry in entries)
        {
            if (signer is not null && !ReferenceEquals(SecretOfRange(entry.Offset, entry.Length), signer))
            {
                // The segment moved on since the server freed the extent: it was reset then, and the old grants no longer verify.
                continue;
            }

            if (entry.Kind == RevocationKind.Seal)
            {
                store.Seal(entry.Offset, entry.Length, entry.Generation);
            }
            else
            {
                store.Forget(entry.Offset, entry.Length, entry.Generation);
            }
        }

        frame.Reply(Status.Ok);
    }

    /// <summary>
    /// The connection's own buffer for data that cannot go straight into the device, grown on demand and freed when
    /// the connection ends. Aligned to the device's sector (at least a page), so block-aligned requests on an
    /// unbuffered device skip its bounce copy.
    /// </summary>
    private AlignedMemory ConnectionBuffer(FrameContext frame, int length)
    {
        var state = StateOf(frame);
        if (state.Buffer is { } current)
        {
            if (current.Length >= length)
            {
                return current;
            }

            state.Buffer = null;
            FreeBuffer(current);
        }

        var alignment = Math.Max(_store!.Device.Alignment, 4096);
        var rounded = ((long)Math.Max(length, 64 << 10) + alignment - 1) & -alignment;
        var buffer = new AlignedMemory(rounded <= int.MaxValue ? (int)rounded : length, alignment);
        Interlocked.Increment(ref _liveBuffers);
        state.Buffer = buffer;
        return buffer;
    }

    private static ConnectionState StateOf(FrameContext frame) => frame.State as ConnectionState ?? (ConnectionState)(frame.State = new ConnectionState());

    /// <summary>What a connection holds between a write's admission and its completion, and its aligned buffer.</summary>
    private sealed class ConnectionState
    {
        public AlignedMemory? Buffer;
        public long Offset;
        public int Length;
        public uint Generation;

        /// <summary>A copy's write grant, checked at admission.</summary>
        public ExtentGrant CopyTarget;
    }

    private void FreeBuffer(AlignedMemory buffer)
    {
        ((IDisposable)buffer).Dispose();
        Interlocked.Decrement(ref _liveBuffers);
    }

    /// <summary>Connection buffers allocated and not yet freed.</summary>
    internal int LiveBuffers => Volatile.Read(ref _liveBuffers);

    private Status CheckGrant(ExtentGrant grant, GrantRights rights, int within, int length, out string error)
    {
        error = string.Empty;
        if (grant.NodeId != NodeId || !(Shared ? SecretOfRange(grant.Offset, grant.Length) is { } secret && grant.Verify(secret) : grant.Verify(_secret)))
        {
            error = "grant is not valid for this node";
            return Status.Unauthorized;
        }

        if (grant.IsExpired(_options.TimeProvider.GetUtcNow(), _options.GrantClockSkew))
        {
            error = $"grant expired at {DateTimeOffset.FromUnixTimeMilliseconds(grant.Expires):u}";
            return Status.StaleGrant;
        }

        if ((grant.Rights & rights) != rights)
        {
            error = $"grant does not allow {rights}";
            return Status.Unauthorized;
        }

        if (within < 0 || length < 0 || (long)within + length > grant.Length || !_store!.IsValidExtent(grant.Offset, grant.Length))
        {
            error = $"range {within}+{length} is outside the extent of {grant.Length} bytes";
            return Status.BadRequest;
        }

        if (length > _options.Listener.Limits.MaxDataBody)
        {
            error = $"read of {length} bytes is over the limit of {_options.Listener.Limits.MaxDataBody}";
            return Status.FrameTooLarge;
        }

        return Status.Ok;
    }

    public async ValueTask DisposeAsync()
    {
        await _stop.CancelAsync().ConfigureAwait(false);
        if (_heartbeats is not null)
        {
            await _heartbeats.ConfigureAwait(false);
        }

        _metadata?.Dispose();
        DisposeLinks();
        _server?.Dispose();
        _peers.Dispose();
        _reclaimer?.Dispose();

        // The device's memory and the read buffers are freed once no request can use them any more: a handler held past
        // the listener's stop timeout (a read from a slow disk) may still copy from or into them, and freed memory under
        // it would end the process or be read as another's. Until it returns they stay (for good if it never does).
        MemoryReleased = FrameServer.ReleaseWhenStoppedAsync(_server, ReleaseMemory);
    }

    /// <summary>
    /// Completes once the device and the read buffers are released after <see cref="DisposeAsync"/>: at once, or when
    /// the last handler held past the listener's stop timeout has returned (see <see cref="FrameServer.Stopped"/>).
    /// </summary>
    internal Task MemoryReleased { get; private set; } = Task.CompletedTask;

    private void ReleaseMemory()
    {
        _store?.Dispose();
        _readBuffers?.Dispose();
        _stop.Dispose();
    }
}
