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
public sealed class StorageServer : IAsyncDisposable, IFrameHandler
{
    private readonly StorageServerOptions _options;
    private readonly ILogger _logger;
    private readonly byte[] _secret = RandomNumberGenerator.GetBytes(32);
    private readonly CancellationTokenSource _stop = new();
    private BlockStore? _store;
    private FrameServer? _server;
    private FrameConnection? _metadata;
    private Task? _heartbeats;
    private long _bytesIn;
    private long _bytesOut;
    private long _requests;
    private int _liveBuffers;

    public StorageServer(StorageServerOptions options, ILoggerFactory loggerFactory)
    {
        options.Validate();
        _options = options;
        _logger = loggerFactory.CreateLogger<StorageServer>();
        LoggerFactory = loggerFactory;
    }

    private ILoggerFactory LoggerFactory { get; }

    /// <summary>The node id the metadata server gave this node (0 before registration).</summary>
    public uint NodeId { get; private set; }

    public System.Net.IPEndPoint EndPoint => _server?.EndPoint ?? throw new InvalidOperationException("not started");

    public BlockStore Store => _store ?? throw new InvalidOperationException("not started");

    public async Task StartAsync(CancellationToken cancellationToken = default)
    {
        var device = _options.DeviceFactory?.Invoke(_options) ?? BlockDevices.Create(_options.Tier, _options.Capacity);
        _store = new BlockStore(device, _options.BlockSize);
        StorageLog.DeviceReady(_logger, device.Description);
        _server = new FrameServer("storage", _options.Listener, this, _logger);
        _server.Start();
        await RegisterAsync(cancellationToken).ConfigureAwait(false);
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
                var bytesIn = Interlocked.Read(ref _bytesIn);
                var bytesOut = Interlocked.Read(ref _bytesOut);
                var body = new BodyWriter();
                HeartbeatRequest.Write(body, new HeartbeatRequest(NodeId, Math.Clamp(cpuShare, 0, 1), (bytesIn - lastIn) / seconds, (bytesOut - lastOut) / seconds, Interlocked.Read(ref _requests)));
                (lastCpu, lastTime, lastIn, lastOut) = (cpu, now, bytesIn, bytesOut);
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
                catch (Exception ex) when (ex is ConnectionLostException or InvalidOperationException)
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
            default:
                frame.ReplyError(Status.UnknownOpcode, $"storage server does not handle opcode {(byte)frame.Header.Opcode}");
                break;
        }
    }

    void IFrameHandler.OnDisconnected(FrameContext connection)
    {
        if (connection.State is AlignedMemory buffer)
        {
            connection.State = null;
            FreeBuffer(buffer);
        }
    }

    private const int WriteHead = WriteExtentRequest.HeadSize;

    private void HandleWrite(FrameContext frame)
    {
        if (frame.BodyRemaining < WriteHead)
        {
            frame.ReplyError(Status.BadRequest, "write body shorter than grant and offset");
            return;
        }

        Span<byte> head = stackalloc byte[WriteHead];
        frame.ReadBodyInto(head);
        WriteExtentRequest.TryRead(head, out var grant, out var within);
        var length = frame.BodyRemaining;
        var status = CheckGrant(grant, GrantRights.Write, within, length, out var error);
        if (status != Status.Ok)
        {
            frame.ReplyError(status, error);
            return;
        }

        var store = _store!;
        var offset = grant.Offset + within;
        if (length == 0)
        {
            frame.Reply(Status.Ok);
            return;
        }

        if (store.BeginWrite(offset, length, grant.Generation) != BlockResult.Ok)
        {
            frame.ReplyError(Status.StaleGrant, "extent was reallocated or is being written by another request");
            return;
        }

        string? deviceError = null;
        try
        {
            if (store.Device.IsDirect)
            {
                frame.ReadBodyInto(store.Device.GetSpan(offset, length));
            }
            else
            {
                // Pieces of the aligned connection buffer: an aligned extent goes to an unbuffered device directly.
                var buffer = ConnectionBuffer(frame, Math.Min(length, 1 << 20)).GetSpan();
                var done = 0;
                while (done < length)
                {
                    var n = Math.Min(buffer.Length, length - done);
                    frame.ReadBodyInto(buffer[..n]);
                    store.Device.Write(offset + done, buffer[..n]);
                    done += n;
                }
            }
        }
        catch (DeviceException ex)
        {
            // The rest of the body is skipped by the frame server; the node keeps serving.
            deviceError = ex.Message;
        }
        finally
        {
            store.EndWrite(offset, length, grant.Generation);
        }

        if (deviceError is not null)
        {
            StorageLog.DeviceFailed(_logger, deviceError);
            frame.ReplyError(deviceError.Contains("no space", StringComparison.OrdinalIgnoreCase) ? Status.CapacityExceeded : Status.IoError, deviceError);
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

        var buffer = ConnectionBuffer(frame, length).GetSpan()[..length];
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

    /// <summary>
    /// The connection's own buffer for data that cannot go straight into the device, grown on demand and freed when
    /// the connection ends. Aligned to the device's sector (at least a page), so block-aligned requests on an
    /// unbuffered device skip its bounce copy.
    /// </summary>
    private AlignedMemory ConnectionBuffer(FrameContext frame, int length)
    {
        if (frame.State is AlignedMemory current)
        {
            if (current.Length >= length)
            {
                return current;
            }

            frame.State = null;
            FreeBuffer(current);
        }

        var alignment = Math.Max(_store!.Device.Alignment, 4096);
        var rounded = ((long)Math.Max(length, 64 << 10) + alignment - 1) & -alignment;
        var buffer = new AlignedMemory(rounded <= int.MaxValue ? (int)rounded : length, alignment);
        Interlocked.Increment(ref _liveBuffers);
        frame.State = buffer;
        return buffer;
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
        if (grant.NodeId != NodeId || !grant.Verify(_secret))
        {
            error = "grant is not valid for this node";
            return Status.Unauthorized;
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
        _server?.Dispose();
        _store?.Dispose();
        _stop.Dispose();
    }
}
