using System.Buffers;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Text;
using Pocket.Networking;
using Pocket.Protocol;
using Pocket.Protocol.Messages;
using Pocket.Storage;

namespace Pocket.StorageServer;

/// <summary>
/// CopyExtent: this node pulls an extent from another storage node into space it granted, so a drain moves bytes
/// node to node and the metadata server never holds them. The write grant is checked from the body's prefix before
/// anything else is read; the source checks the read grant as it would any client's.
/// </summary>
public sealed partial class StorageServer
{
    private long _bytesCopied;

    /// <summary>Bytes this node copied in from other nodes (CopyExtent).</summary>
    public long BytesCopied => Interlocked.Read(ref _bytesCopied);

    /// <summary>Connections to other storage nodes open (or opening) now, for copies.</summary>
    internal int PeerConnectionCount => _peers.Count;

    /// <summary>Checks the write grant (the prefix) before the rest is read; the copy then runs on the I/O pool.</summary>
    private FrameAdmission AdmitCopy(FrameContext frame)
    {
        if (frame.BodyRemaining < CopyExtentRequest.WriteGrantSize || frame.BodyRemaining > CopyExtentRequest.MaxSize)
        {
            frame.ReplyError(Status.BadRequest, "copy body must be write grant, read grant, offset, port and host");
            return FrameAdmission.Buffer;
        }

        Span<byte> prefix = stackalloc byte[CopyExtentRequest.WriteGrantSize];
        frame.ReadBodyInto(prefix);
        CopyExtentRequest.TryReadTarget(prefix, out var target);
        var status = CheckGrant(target, GrantRights.Write, 0, target.Length, out var error);
        if (status != Status.Ok)
        {
            // The rest (a read grant and an address) is skipped unread.
            frame.ReplyError(status, error);
            return FrameAdmission.Buffer;
        }

        StateOf(frame).CopyTarget = target;

        // The copy waits on the network: never on an event loop.
        return FrameAdmission.Blocking;
    }

    private void HandleCopy(FrameContext frame)
    {
        var target = ((ConnectionState)frame.State!).CopyTarget;
        var rest = frame.ReadBody();
        Span<byte> body = stackalloc byte[CopyExtentRequest.MaxSize];
        target.Write(body);
        rest.CopyTo(body[CopyExtentRequest.WriteGrantSize..]);
        if (!CopyExtentRequest.TryRead(body[..(CopyExtentRequest.WriteGrantSize + rest.Length)], out var request))
        {
            frame.ReplyError(Status.BadRequest, "copy body must be write grant, read grant, offset, port and host");
            return;
        }

        var source = request.Source;
        var within = request.Within;
        var length = target.Length;
        if (within < 0 || (long)within + length > source.Length)
        {
            frame.ReplyError(Status.BadRequest, $"copy of {length} bytes from {within} is outside the source extent of {source.Length} bytes");
            return;
        }

        if (source.NodeId == NodeId)
        {
            frame.ReplyError(Status.BadRequest, "a node does not copy from itself");
            return;
        }

        var host = Encoding.UTF8.GetString(request.HostUtf8);
        var store = _store!;
        if (store.BeginWrite(target.Offset, length, target.Generation) != BlockResult.Ok)
        {
            frame.ReplyError(Status.StaleGrant, "extent was reallocated or is being written by another request");
            return;
        }

        (Status Status, string Message) result;
        try
        {
            var buffer = store.Device.IsDirect ? null : ConnectionBuffer(frame, Math.Min(length, _options.CopyChunkSize));

            // Blocking is what this handler was admitted for: it runs on the I/O pool, and the replies it waits for are
            // completed by the client loops.
            result = CopyAsync(store, target, source, within, host, request.Port, buffer).GetAwaiter().GetResult();
        }
        finally
        {
            store.EndWrite(target.Offset, length, target.Generation);
        }

        if (result.Status != Status.Ok)
        {
            frame.ReplyError(result.Status, result.Message);
            return;
        }

        frame.Reply(Status.Ok);
    }

    /// <summary>
    /// Reads the source range in chunks of at most <see cref="StorageServerOptions.CopyChunkSize"/>: straight into node
    /// memory (dram), or into the connection's aligned buffer and from there to the device.
    /// </summary>
    private async Task<(Status, string)> CopyAsync(BlockStore store, ExtentGrant target, ExtentGrant source, int within, string host, ushort port, AlignedMemory? buffer)
    {
        var remote = $"source node {source.NodeId} at {host}:{port}";
        try
        {
            var connection = await _peers.GetAsync(host, port, _stop.Token).ConfigureAwait(false);
            var head = new BodyWriter(ReadExtentRequest.Size);
            for (var at = 0; at < target.Length;)
            {
                var count = Math.Min(_options.CopyChunkSize, target.Length - at);
                using var place = buffer is null ? new DeviceMemory(store.Device, target.Offset + at, count) : null;
                var destination = place?.Memory ?? buffer!.Memory[..count];
                head.Reset();
                ReadExtentRequest.Write(head, source, within + at, count);
                var reply = await connection.SendAsync(Opcode.ReadExtent, FrameFlags.None, JobToken.None, head.WrittenMemory, replyInto: destination, cancellationToken: _stop.Token).ConfigureAwait(false);
                if (!reply.IsOk)
                {
                    return (reply.Status, $"{remote}: {reply.Message}");
                }

                if (reply.DataLength != count)
                {
                    return (Status.IoError, $"{remote} sent {reply.DataLength} bytes for a read of {count}");
                }

                if (buffer is not null)
                {
                    store.Device.Write(target.Offset + at, buffer.GetSpan()[..count]);
                }

                Interlocked.Add(ref _bytesIn, FrameHeader.Size + count);
                Interlocked.Add(ref _bytesCopied, count);
                at += count;
            }

            return (Status.Ok, string.Empty);
        }
        catch (Exception ex) when (ex is ConnectionLostException or RequestTimeoutException)
        {
            return (Status.NodeLost, $"{remote} is unreachable: {ex.Message}");
        }
        catch (DeviceException ex)
        {
            StorageLog.DeviceFailed(_logger, ex.Message);
            return (ex.IsNoSpace ? Status.CapacityExceeded : Status.IoError, ex.Message);
        }
        catch (Exception ex) when (ex is OperationCanceledException or ObjectDisposedException && _stop.IsCancellationRequested)
        {
            return (Status.ShuttingDown, "storage node is shutting down");
        }
    }

    /// <summary>A range of a directly addressable device as <see cref="Memory{T}"/>, so a reply is read straight into place.</summary>
    private sealed unsafe class DeviceMemory(IBlockDevice device, long offset, int length) : MemoryManager<byte>
    {
        public override Span<byte> GetSpan() => device.GetSpan(offset, length);

        // Device memory is native and never moves.
        public override MemoryHandle Pin(int elementIndex = 0) =>
            new(Unsafe.AsPointer(ref Unsafe.Add(ref MemoryMarshal.GetReference(GetSpan()), elementIndex)));

        public override void Unpin()
        {
        }

        protected override void Dispose(bool disposing)
        {
        }
    }
}
