using Pocket.Networking;
using Pocket.Protocol;
using Pocket.Protocol.Messages;

namespace Pocket.Metadata;

public sealed partial class MetadataServer
{
    /// <summary>RegisterNode (<see cref="RegisterNodeRequest"/>, reply <see cref="RegisterNodeReply"/>): a storage node joins, live or standby.</summary>
    private void HandleRegisterNode(FrameContext frame)
    {
        if (!RegisterNodeRequest.TryRead(frame.ReadBody(), out var request))
        {
            BadBody(frame, "register-node");
            return;
        }

        var (tier, host, port, capacity, blockSize, flags) = (request.Tier, request.Host, request.Port, request.Capacity, request.BlockSize, request.Flags);
        if (!IsAdmin(frame, out var error))
        {
            frame.ReplyError(Status.Unauthorized, error);
            return;
        }

        if ((flags & ~RegisterNodeRequest.StandbyFlag) != 0)
        {
            frame.ReplyError(Status.BadRequest, $"register-node flags 0x{flags:x2} has unknown bits (only 0x01, standby, is defined)");
            return;
        }

        if (!Enum.IsDefined(tier) || host.Length == 0 || port == 0 || capacity <= 0 || blockSize < 4096 || (blockSize & (blockSize - 1)) != 0)
        {
            frame.ReplyError(Status.BadRequest, "register-node needs a known tier, a host, a port, a positive capacity and a power-of-two block size of at least 4096");
            return;
        }

        var registered = _state.RegisterNode(request, frame.ConnectionId);
        if (Failed(frame, registered))
        {
            return;
        }

        var node = registered.Value;
        MetadataLog.NodeRegistered(_logger, node.Id, node.Address, tier.ToString(), capacity);
        Span<byte> reply = stackalloc byte[RegisterNodeReply.Size];
        RegisterNodeReply.Write(reply, node.Id);
        frame.Reply(Status.Ok, reply);
    }

    /// <summary>ActivateNode (<see cref="ActivateNodeRequest"/>): a standby node becomes live; activating a live node is a no-op.</summary>
    private void HandleActivateNode(FrameContext frame)
    {
        if (!ActivateNodeRequest.TryRead(frame.ReadBody(), out var id))
        {
            BadBody(frame, "activate-node");
            return;
        }

        if (!IsAdmin(frame, out var error))
        {
            frame.ReplyError(Status.Unauthorized, error);
            return;
        }

        if (!Failed(frame, _state.ActivateNode(id)))
        {
            frame.Reply(Status.Ok);
        }
    }

    /// <summary>DrainNode (<see cref="DrainNodeRequest"/>): the copy runs in the background (see ListNodes for progress).</summary>
    private void HandleDrainNode(FrameContext frame)
    {
        if (!DrainNodeRequest.TryRead(frame.ReadBody(), out var id))
        {
            BadBody(frame, "drain-node");
            return;
        }

        if (!IsAdmin(frame, out var error))
        {
            frame.ReplyError(Status.Unauthorized, error);
            return;
        }

        if (!Failed(frame, _drains.Drain(id)))
        {
            frame.Reply(Status.Ok);
        }
    }

    /// <summary>Heartbeat (<see cref="HeartbeatRequest"/>): a node's load, every second, over its registration connection.</summary>
    private void HandleHeartbeat(FrameContext frame)
    {
        if (!HeartbeatRequest.TryRead(frame.ReadBody(), out var request))
        {
            BadBody(frame, "heartbeat");
            return;
        }

        var result = _state.Heartbeat(request, frame.ConnectionId);
        if (Failed(frame, result))
        {
            return;
        }

        if (result.Value is { } share)
        {
            Span<byte> reply = stackalloc byte[HeartbeatReply.Size];
            HeartbeatReply.Write(reply, share);
            frame.Reply(Status.Ok, reply);
        }
        else
        {
            frame.Reply(Status.Ok);
        }
    }

    /// <summary>ReleaseShare (<see cref="ReleaseShareRequest"/>, reply <see cref="ShareMask"/>): a node takes back free segments of its share.</summary>
    private void HandleReleaseShare(FrameContext frame)
    {
        if (!ReleaseShareRequest.TryRead(frame.ReadBody(), out var nodeId, out var count))
        {
            BadBody(frame, "release-share");
            return;
        }

        var result = _state.ReleaseShare(nodeId, count, frame.ConnectionId);
        if (!Failed(frame, result))
        {
            Span<byte> reply = stackalloc byte[ShareMask.Size];
            ShareMask.Write(reply, result.Value);
            frame.Reply(Status.Ok, reply);
        }
    }

    /// <summary>AddShare (<see cref="AddShareRequest"/>): a node gives this server more segments to allocate in.</summary>
    private void HandleAddShare(FrameContext frame)
    {
        if (!AddShareRequest.TryRead(frame.ReadBody(), out var nodeId, out var mask))
        {
            BadBody(frame, "add-share");
            return;
        }

        if (!Failed(frame, _state.AddShare(nodeId, mask, frame.ConnectionId)))
        {
            frame.Reply(Status.Ok);
        }
    }

    /// <summary>ListNodes (reply <see cref="ListNodesReply"/>): every node, for the cluster token or a job's token.</summary>
    private void HandleListNodes(FrameContext frame)
    {
        var result = _state.ListNodes(frame.Header.Token, IsAdmin(frame, out _));
        if (Failed(frame, result))
        {
            return;
        }

        var body = new BodyWriter(1024);
        ListNodesReply.Write(body, result.Value);
        frame.Reply(Status.Ok, body.WrittenSpan);
    }
}
