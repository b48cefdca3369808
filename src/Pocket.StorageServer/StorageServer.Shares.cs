using System.Net;
using System.Security.Cryptography;
using Pocket.Networking;
using Pocket.Protocol;
using Pocket.Protocol.Messages;

namespace Pocket.StorageServer;

/// <summary>
/// A node that serves several metadata servers (<see cref="StorageServerOptions.OtherMetadata"/>): one registration
/// connection, grant secret and share of the 64 segments per server. The node moves every segment itself, in this
/// order: the holder gives it up (it holds no block there), grants for it stop verifying, its blocks are reset, and
/// only then does the next holder get it; so no block is ever allocatable by two servers. All of it runs on the
/// registration loop (start, then the heartbeat loop), one step at a time.
/// </summary>
public sealed partial class StorageServer
{
    private MetadataLink[]? _links;
    private ShareTable? _shares;

    // The secret of the server holding each segment (null: none), read lock-free by grant checks.
    private readonly byte[]?[] _segmentSecrets = new byte[ShareTable.Segments][];
    private long _segmentBytes;

    /// <summary>True when this node serves several metadata servers.</summary>
    private bool Shared => _links is not null;

    /// <summary>The segments each metadata server holds now (index 0 is <see cref="StorageServerOptions.Metadata"/>); one server: every segment.</summary>
    internal ulong[] Shares => _shares is { } table ? [.. Enumerable.Range(0, table.Servers).Select(table.Held)] : [ulong.MaxValue];

    private sealed class MetadataLink(int index, DnsEndPoint endPoint)
    {
        public int Index { get; } = index;

        public DnsEndPoint EndPoint { get; } = endPoint;

        public FrameConnection? Connection { get; set; }

        public byte[] Secret { get; set; } = [];

        public bool Registered { get; set; }

        /// <summary>What the server said at the last heartbeat it uses of its share and wants free here (<see cref="HeartbeatReply"/>).</summary>
        public HeartbeatReply Demand { get; set; }

        public bool Up => Registered && Connection is { IsConnected: true };

        /// <summary>A connection being made to the server while it is not registered (see <c>JoinAsync</c>).</summary>
        public Task<FrameConnection>? Connecting { get; set; }

        /// <summary>When the server last answered (a <see cref="TimeProvider"/> timestamp): registration or a heartbeat.</summary>
        public long LastAnswer { get; set; }

        /// <summary>
        /// The server took the connection but did not answer the last registration in time: the next one gives it no
        /// segments up front (the balance rounds move its share once it is up), so a server that stalls again takes
        /// nothing from the others' shares.
        /// </summary>
        public bool Unanswered { get; set; }

        /// <summary>When this node last warned that the server is silent (a timestamp; 0: not since it last answered).</summary>
        public long LastWarned { get; set; }

        /// <summary>
        /// A ReleaseShare or AddShare the server did not answer within its round's wait: a later round applies the answer
        /// (<c>Settle</c>). Until then the node's view keeps the segments at the server (the one safe way: it may have
        /// carried the request out), and the server's share does not move.
        /// </summary>
        public ShareRequest? Pending { get; set; }

        /// <summary>Up, with no share request outstanding: its share may move.</summary>
        public bool Free => Up && Pending is null;
    }

    /// <summary>A share request still waiting for its answer, on the connection it went out on.</summary>
    private sealed record ShareRequest(Opcode Opcode, ulong Mask, FrameConnection Connection, Task<FrameReply> Reply);

    /// <summary>How often a silent server's warning repeats (it said the same thing every heartbeat, once a second).</summary>
    internal static readonly TimeSpan SilenceWarningEvery = TimeSpan.FromSeconds(10);

    /// <summary>
    /// Whether a heartbeat that went unanswered is worth a warning: the first since the server last answered, then one
    /// every <see cref="SilenceWarningEvery"/> while it stays silent.
    /// </summary>
    internal static bool WarnOfSilence(long lastAnswer, long lastWarned, long now, TimeProvider time) =>
        lastWarned <= lastAnswer || time.GetElapsedTime(lastWarned, now) >= SilenceWarningEvery;

    private async Task StartSharedAsync(CancellationToken cancellationToken)
    {
        var endPoints = new List<DnsEndPoint> { _options.Metadata };
        endPoints.AddRange(_options.OtherMetadata);
        _links = [.. endPoints.Select((e, i) => new MetadataLink(i, e))];
        _shares = new ShareTable(_links.Length);
        var blocks = _store!.BlockCount;
        _segmentBytes = Math.Max(1, (blocks + ShareTable.Segments - 1) / ShareTable.Segments) * _store.BlockSize;
        NodeId = NewNodeId();

        foreach (var link in _links)
        {
            try
            {
                await ConnectAsync(link, cancellationToken).ConfigureAwait(false);
            }
            catch (Exception ex) when (ex is ConnectionLostException or System.Net.Sockets.SocketException or IOException)
            {
                StorageLog.MetadataUnreachable(_logger, link.EndPoint.ToString(), ex.Message);
            }
        }

        var reachable = _links.Where(l => l.Connection is { IsConnected: true }).ToList();
        if (reachable.Count == 0)
        {
            throw new InvalidOperationException($"none of the {_links.Length} metadata servers is reachable");
        }

        // A server that takes the connection but does not answer the registration is joined at a later round (its
        // share is unowned until then and goes to the others at the first round); one that refuses it stops the start.
        for (var i = 0; i < reachable.Count; i++)
        {
            await RegisterLinkAsync(reachable[i], ShareTable.Run(i, reachable.Count), cancellationToken).ConfigureAwait(false);
        }

        if (!_links.Any(l => l.Registered))
        {
            throw new InvalidOperationException($"none of the {_links.Length} metadata servers answered the registration within {RegistrationWait.TotalSeconds:0.###} s");
        }

        NoteIfServingAll();
    }

    /// <summary>
    /// How long a registration may take before the node gives up on it until the next round: a round waits for it, and
    /// the other servers' heartbeats wait for the round, so it is bounded like a heartbeat (one interval, at least a
    /// second: well within the servers' suspect time, 3 s by default).
    /// </summary>
    private TimeSpan RegistrationWait => _options.HeartbeatInterval > TimeSpan.FromSeconds(1) ? _options.HeartbeatInterval : TimeSpan.FromSeconds(1);

    /// <summary>An id in the range servers never assign themselves, proposed to every server (the same grant id everywhere).</summary>
    private static uint NewNodeId() => 0x8000_0000u | (uint)RandomNumberGenerator.GetInt32(1, int.MaxValue);

    private async Task ConnectAsync(MetadataLink link, CancellationToken cancellationToken)
    {
        link.Connection?.Dispose();
        link.Connection = null;
        link.Registered = false;
        link.Connection = await FrameConnection.ConnectAsync(link.EndPoint.Host, link.EndPoint.Port, _options.MetadataConnection, cancellationToken).ConfigureAwait(false);
    }

    /// <summary>
    /// Registers with one server, giving it <paramref name="share"/> (unowned segments), under a fresh secret. False when
    /// the server did not answer within <see cref="RegistrationWait"/>: the share is taken back and reset, and the
    /// connection closed, so that a registration the server carries out late ends there as a node whose connection
    /// closed (dead, holding nothing) rather than as a second holder of segments this node gives to others.
    /// </summary>
    private async Task<bool> RegisterLinkAsync(MetadataLink link, ulong share, CancellationToken cancellationToken)
    {
        var shares = _shares!;
        link.Secret = RandomNumberGenerator.GetBytes(RegisterNodeRequest.SecretSize);
        ResetSegments(share);
        shares.Give(link.Index, share);
        SetSecrets(share, link.Secret);
        var host = _options.AdvertisedHost ?? _server!.EndPoint.Address.ToString();
        var body = new BodyWriter();
        RegisterNodeRequest.Write(body, _options.Tier, host, (ushort)_server!.EndPoint.Port, _store!.Capacity, _store.BlockSize, link.Secret, _options.Standby, NodeId, share);
        FrameReply reply;
        using var wait = new CancellationTokenSource(RegistrationWait, _options.TimeProvider);
        using var either = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken, wait.Token);
        try
        {
            reply = await link.Connection!.SendAsync(Opcode.RegisterNode, FrameFlags.None, _options.ClusterToken, body.WrittenMemory, cancellationToken: either.Token).ConfigureAwait(false);
        }
        catch (OperationCanceledException) when (!cancellationToken.IsCancellationRequested)
        {
            Unshare(link, share);
            ResetSegments(share);
            link.Connection?.Dispose();
            link.Connection = null;
            link.Unanswered = true;
            var now = _options.TimeProvider.GetTimestamp();
            if (WarnOfSilence(link.LastAnswer, link.LastWarned, now, _options.TimeProvider))
            {
                link.LastWarned = now;
                StorageLog.RegistrationUnanswered(_logger, link.EndPoint.ToString(), RegistrationWait.TotalSeconds);
            }

            return false;
        }
        catch
        {
            Unshare(link, share);
            throw;
        }

        if (!reply.IsOk || !RegisterNodeReply.TryRead(reply.Body, out var id) || id != NodeId)
        {
            Unshare(link, share);
            throw new InvalidOperationException($"metadata server {link.EndPoint} refused registration: {(reply.IsOk ? "it did not take the node id" : reply.Message)}");
        }

        link.Registered = true;
        link.Unanswered = false;
        link.LastAnswer = _options.TimeProvider.GetTimestamp();
        StorageLog.Registered(_logger, NodeId, $"{host}:{_server.EndPoint.Port} with {link.EndPoint} ({ShareTable.Count(share)} of 64 segments)", _options.Tier.ToString(), _store.Capacity);
        return true;
    }

    private void Unshare(MetadataLink link, ulong mask)
    {
        SetSecrets(mask, null);
        _shares!.Take(link.Index, mask & _shares.Held(link.Index));
    }

    /// <summary>One heartbeat round over every server, then repairs: lost servers' segments go to the others, missing servers are joined, shares follow demand.</summary>
    private async Task SharedTickAsync(HeartbeatRequest beat, CancellationToken cancellationToken)
    {
        var body = new BodyWriter();
        HeartbeatRequest.Write(body, beat);

        // Every server at once, each given one heartbeat interval to answer: a server that is cut off or stalled must not
        // hold up the others' heartbeats (one after another, a server that did not answer kept every other server
        // without a heartbeat for up to the request timeout, 30 s: a test saw the healthy server mark both nodes
        // suspect 8 s into a cut).
        var registered = _links!.Where(l => l.Registered).ToList();
        var lost = await Task.WhenAll(registered.Select(link => BeatAsync(link, body.WrittenMemory, cancellationToken))).ConfigureAwait(false);
        for (var i = 0; i < registered.Count; i++)
        {
            if (lost[i])
            {
                await LoseAsync(registered[i], cancellationToken).ConfigureAwait(false);
            }
        }

        foreach (var link in _links!)
        {
            Settle(link);
        }

        foreach (var link in _links!)
        {
            if (!link.Registered)
            {
                await JoinAsync(link, cancellationToken).ConfigureAwait(false);
            }
        }

        await BalanceAsync(cancellationToken).ConfigureAwait(false);
        NoteIfServingAll();
    }

    /// <summary>Completes <see cref="ServingAllMetadataServers"/> once every server is up here and holds segments.</summary>
    private void NoteIfServingAll()
    {
        if (!_servingAll.Task.IsCompleted && _links!.All(l => l.Up && _shares!.Held(l.Index) != 0))
        {
            _servingAll.TrySetResult();
        }
    }

    /// <summary>
    /// One heartbeat to one server; true when the server is gone for this node (its connection closed, it answered
    /// NotFound: it declared this node dead or restarted, or it has been silent for <see cref="StorageServerOptions.MetadataSilenceLimit"/>).
    /// No answer within a heartbeat interval is not gone: a server cut off for a while keeps its share, so its blocks
    /// here outlive a partition shorter than that limit.
    /// </summary>
    private async Task<bool> BeatAsync(MetadataLink link, ReadOnlyMemory<byte> body, CancellationToken cancellationToken)
    {
        if (!link.Up)
        {
            return true;
        }

        using var wait = new CancellationTokenSource(_options.HeartbeatInterval, _options.TimeProvider);
        using var either = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken, wait.Token);
        try
        {
            var reply = await link.Connection!.SendAsync(Opcode.Heartbeat, FrameFlags.None, _options.ClusterToken, body, cancellationToken: either.Token).ConfigureAwait(false);
            link.LastAnswer = _options.TimeProvider.GetTimestamp();
            if (reply.IsOk && HeartbeatReply.TryRead(reply.Body, out var demand))
            {
                link.Demand = demand;
            }

            return reply.Status == Status.NotFound;
        }
        catch (ConnectionLostException)
        {
            return true;
        }
        catch (Exception ex) when (ex is RequestTimeoutException || (ex is OperationCanceledException && !cancellationToken.IsCancellationRequested))
        {
            // Silent past the limit (by default the servers' own node timeout, after which it has declared this node
            // dead anyway): gone, so its share goes to the servers that answer (a host that died without closing
            // its connections would otherwise hold its share until TCP gives up, many minutes).
            var now = _options.TimeProvider.GetTimestamp();
            var silent = _options.TimeProvider.GetElapsedTime(link.LastAnswer, now);
            if (WarnOfSilence(link.LastAnswer, link.LastWarned, now, _options.TimeProvider))
            {
                link.LastWarned = now;
                StorageLog.HeartbeatUnanswered(_logger, link.EndPoint.ToString(), silent.TotalSeconds);
            }

            return silent >= _options.MetadataSilenceLimit;
        }
    }

    /// <summary>A server is gone: its segments stop verifying, are reset and are handed to the servers still up.</summary>
    private async Task LoseAsync(MetadataLink link, CancellationToken cancellationToken)
    {
        var mask = _shares!.Held(link.Index);
        Unshare(link, mask);
        link.Registered = false;
        link.Pending = null;
        link.Connection?.Dispose();
        link.Connection = null;
        ResetSegments(mask);
        StorageLog.MetadataLost(_logger, link.EndPoint.ToString(), ShareTable.Count(mask));
        await GiveAsync(mask, cancellationToken).ConfigureAwait(false);
    }

    /// <summary>Hands unowned segments out one at a time to the server holding the fewest; what a server fails to take stays unowned.</summary>
    private async Task GiveAsync(ulong mask, CancellationToken cancellationToken)
    {
        var up = _links!.Where(l => l.Free).ToList();
        if (up.Count == 0 || mask == 0)
        {
            return;
        }

        var gifts = new ulong[_links!.Length];
        for (var rest = mask; rest != 0; rest &= rest - 1)
        {
            var to = up.MinBy(l => ShareTable.Count(_shares!.Held(l.Index) | gifts[l.Index]))!;
            gifts[to.Index] |= rest & (~rest + 1);
        }

        foreach (var link in up)
        {
            if (gifts[link.Index] != 0)
            {
                await AddShareAsync(link, gifts[link.Index], cancellationToken).ConfigureAwait(false);
            }
        }
    }

    /// <summary>
    /// Gives a server segments: they are its own in this node's view (and verify its grants) from now on, so no other
    /// server can get them while it may be taking them. An answer that does not come within the round's wait is applied
    /// by a later round.
    /// </summary>
    private async Task AddShareAsync(MetadataLink link, ulong mask, CancellationToken cancellationToken)
    {
        _shares!.Give(link.Index, mask);
        SetSecrets(mask, link.Secret);
        var body = new BodyWriter();
        AddShareRequest.Write(body, NodeId, mask);
        if (await SendShareRequestAsync(link, Opcode.AddShare, mask, body.WrittenMemory, cancellationToken).ConfigureAwait(false) is { } reply)
        {
            AfterAddShare(link, mask, reply);
        }
    }

    private void AfterAddShare(MetadataLink link, ulong mask, Task<FrameReply> reply)
    {
        // Cancelled: the node is stopping.
        if ((reply.IsCompletedSuccessfully && reply.Result.IsOk) || reply.IsCanceled)
        {
            return;
        }

        // The server may or may not have taken them: it is treated as lost at the next round, which takes its whole share back.
        var why = reply.IsCompletedSuccessfully ? reply.Result.Message : reply.Exception?.GetBaseException().Message ?? "cancelled";
        StorageLog.HeartbeatFailed(_logger, $"{link.EndPoint} did not take {ShareTable.Count(mask)} segments: {why}");
        link.Connection?.Dispose();
    }

    /// <summary>
    /// Asks a server for up to <paramref name="count"/> free segments; those it gives stop verifying and are reset. 0 when
    /// it gave none, or did not answer within the round's wait (a later round applies the answer).
    /// </summary>
    private async Task<ulong> ReleaseAsync(MetadataLink link, int count, CancellationToken cancellationToken)
    {
        var body = new BodyWriter();
        ReleaseShareRequest.Write(body, NodeId, count);
        return await SendShareRequestAsync(link, Opcode.ReleaseShare, 0, body.WrittenMemory, cancellationToken).ConfigureAwait(false) is { } reply
            ? AfterReleaseShare(link, reply)
            : 0;
    }

    private ulong AfterReleaseShare(MetadataLink link, Task<FrameReply> reply)
    {
        if (reply.IsCompletedSuccessfully)
        {
            var answer = reply.Result;
            if (!answer.IsOk || !ShareMask.TryRead(answer.Body, out var released) || (released & ~_shares!.Held(link.Index)) != 0)
            {
                return 0;
            }

            Unshare(link, released);
            ResetSegments(released);
            return released;
        }

        // No answer ever (the request timeout; cancelled only when the node stops): the server may have given segments up
        // that this node still counts as its own. Closing the connection settles it: the next round takes the server's
        // whole share back and resets it (the server, seeing the connection close, drops the node), and joins it again
        // afresh. A lost connection is that already.
        if (!reply.IsCanceled && reply.Exception?.GetBaseException() is not ConnectionLostException)
        {
            StorageLog.HeartbeatFailed(_logger, $"{link.EndPoint} never answered a ReleaseShare: {reply.Exception?.GetBaseException().Message ?? "cancelled"}");
            link.Connection?.Dispose();
        }

        return 0;
    }

    /// <summary>
    /// Sends a share request and waits for its answer at most a registration's wait (one heartbeat interval, at least a
    /// second): a server that stalls there must not hold the round, whose heartbeats the other servers wait for (their
    /// suspect time is 3 s by default; the request timeout, 30 s). The answer, or null when it has not come: the request
    /// is then the link's <see cref="MetadataLink.Pending"/>, for a later round to apply.
    /// </summary>
    private async Task<Task<FrameReply>?> SendShareRequestAsync(MetadataLink link, Opcode opcode, ulong mask, ReadOnlyMemory<byte> body, CancellationToken cancellationToken)
    {
        var connection = link.Connection!;
        var reply = connection.SendAsync(opcode, FrameFlags.None, _options.ClusterToken, body, cancellationToken: cancellationToken).AsTask();
        if (!reply.IsCompleted)
        {
            using var wait = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
            await Task.WhenAny(reply, Task.Delay(RegistrationWait, _options.TimeProvider, wait.Token)).ConfigureAwait(false);
            await wait.CancelAsync().ConfigureAwait(false);
        }

        if (reply.IsCompleted)
        {
            return reply;
        }

        // Observed whatever becomes of it (a link lost meanwhile never looks at it again).
        _ = reply.ContinueWith(static t => _ = t.Exception, CancellationToken.None, TaskContinuationOptions.OnlyOnFaulted | TaskContinuationOptions.ExecuteSynchronously, TaskScheduler.Default);
        link.Pending = new ShareRequest(opcode, mask, connection, reply);
        StorageLog.ShareRequestUnanswered(_logger, link.EndPoint.ToString(), opcode.ToString(), RegistrationWait.TotalSeconds);
        return null;
    }

    /// <summary>Applies the answer of a share request that outlived its round, once it came (on the connection it went out on).</summary>
    private void Settle(MetadataLink link)
    {
        if (link.Pending is not { } pending || !pending.Reply.IsCompleted)
        {
            return;
        }

        link.Pending = null;
        if (!ReferenceEquals(link.Connection, pending.Connection))
        {
            // The link was lost meanwhile: its whole share was taken back and reset then.
            return;
        }

        if (pending.Opcode == Opcode.AddShare)
        {
            AfterAddShare(link, pending.Mask, pending.Reply);
        }
        else if (AfterReleaseShare(link, pending.Reply) is var released and not 0)
        {
            // Unowned now: this round's balance hands them out.
            StorageLog.ShareReleasedLate(_logger, link.EndPoint.ToString(), ShareTable.Count(released));
        }
    }

    /// <summary>A server not registered (never reached, or lost): connect, collect unowned segments and others' surplus, register.</summary>
    private async Task JoinAsync(MetadataLink link, CancellationToken cancellationToken)
    {
        // Connecting may take the whole connect timeout (a host cut off answers nothing), longer than the other servers
        // may go without a heartbeat: it runs beside the rounds, and the join goes on in the first round after it.
        link.Connecting ??= FrameConnection.ConnectAsync(link.EndPoint.Host, link.EndPoint.Port, _options.MetadataConnection, cancellationToken);
        if (!link.Connecting.IsCompleted)
        {
            return;
        }

        var connecting = link.Connecting;
        link.Connecting = null;
        if (!connecting.IsCompletedSuccessfully)
        {
            // Observed here (ConnectionLostException, or cancelled at stop); the next round tries again.
            _ = connecting.Exception;
            return;
        }

        link.Connection?.Dispose();
        link.Connection = await connecting.ConfigureAwait(false);
        link.Registered = false;

        var up = _links!.Where(l => l.Up).ToList();
        var target = ShareTable.Segments / (up.Count + 1);
        var share = _shares!.Unowned;
        if (link.Unanswered && up.Count > 0)
        {
            // It left a registration unanswered before: it joins with no segments, and no server up gives any away for
            // it (else the answering servers' shares churned every round); the rounds balance it once it answers.
            share = 0;
        }
        else
        {
            foreach (var other in up.Where(l => l.Free))
            {
                var surplus = ShareTable.Count(_shares.Held(other.Index)) - target;
                if (surplus > 0 && ShareTable.Count(share) < target)
                {
                    share |= await ReleaseAsync(other, Math.Min(surplus, target - ShareTable.Count(share)), cancellationToken).ConfigureAwait(false);
                }
            }
        }

        try
        {
            if (await RegisterLinkAsync(link, share, cancellationToken).ConfigureAwait(false))
            {
                return;
            }
        }
        catch (Exception ex) when (ex is ConnectionLostException or RequestTimeoutException or InvalidOperationException)
        {
            StorageLog.HeartbeatFailed(_logger, ex.Message);
            link.Connection?.Dispose();
            link.Connection = null;
        }

        await GiveAsync(share & _shares.Unowned, cancellationToken).ConfigureAwait(false);
    }

    /// <summary>
    /// Unowned segments go to the servers up; then one move a round (<see cref="ShareTable.PlanMove"/>) of free segments
    /// towards the targets <see cref="ShareTable.Targets"/> sets from what each server said it uses and wants: an even
    /// split while no server's jobs want more, else shares that follow the jobs' reservations.
    /// </summary>
    private async Task BalanceAsync(CancellationToken cancellationToken)
    {
        await GiveAsync(_shares!.Unowned, cancellationToken).ConfigureAwait(false);
        var up = _links!.Where(l => l.Up).ToList();

        // A server whose last share request is still unanswered holds what it held: no move until the answer came.
        if (up.Count < 2 || up.Exists(l => l.Pending is not null))
        {
            return;
        }

        var held = up.Select(l => ShareTable.Count(_shares.Held(l.Index))).ToArray();
        var targets = ShareTable.Targets([.. up.Select(l => (Segments(l.Demand.UsedBytes), Segments(l.Demand.WantedBytes)))]);
        if (ShareTable.PlanMove(held, targets) is not var (from, to, count))
        {
            return;
        }

        var moved = await ReleaseAsync(up[from], count, cancellationToken).ConfigureAwait(false);
        if (moved != 0)
        {
            StorageLog.ShareMoved(_logger, ShareTable.Count(moved), up[from].EndPoint.ToString(), up[to].EndPoint.ToString(), targets[from], targets[to]);
            await AddShareAsync(up[to], moved, cancellationToken).ConfigureAwait(false);
        }

        int Segments(long bytes) => (int)Math.Min(ShareTable.Segments, (bytes + _segmentBytes - 1) / _segmentBytes);
    }

    private void ResetSegments(ulong mask)
    {
        var store = _store!;
        var segmentBlocks = _segmentBytes / store.BlockSize;
        for (var rest = mask; rest != 0; rest &= rest - 1)
        {
            var segment = System.Numerics.BitOperations.TrailingZeroCount(rest);
            var first = Math.Min(segment * segmentBlocks, store.BlockCount);
            store.Reset(first, Math.Min(first + segmentBlocks, store.BlockCount) - first);
        }
    }

    private void SetSecrets(ulong mask, byte[]? secret)
    {
        for (var rest = mask; rest != 0; rest &= rest - 1)
        {
            Volatile.Write(ref _segmentSecrets[System.Numerics.BitOperations.TrailingZeroCount(rest)], secret);
        }
    }

    /// <summary>
    /// The secret of the server holding every segment of the range, or null when the range crosses into a segment another
    /// server (or none) holds: a server signs only for its own share.
    /// </summary>
    internal byte[]? SecretOfRange(long offset, long length)
    {
        if (offset < 0 || length < 0)
        {
            return null;
        }

        var first = offset / _segmentBytes;
        var last = (offset + Math.Max(length, 1) - 1) / _segmentBytes;
        if (last >= ShareTable.Segments)
        {
            return null;
        }

        var secret = Volatile.Read(ref _segmentSecrets[first]);
        for (var segment = first + 1; segment <= last && secret is not null; segment++)
        {
            if (!ReferenceEquals(Volatile.Read(ref _segmentSecrets[segment]), secret))
            {
                return null;
            }
        }

        return secret;
    }

    /// <summary>The secrets of the servers this node is registered with (a revocation is signed by one of them).</summary>
    private IEnumerable<byte[]> LinkSecrets => _links!.Where(l => l.Registered).Select(l => l.Secret);

    private void DisposeLinks()
    {
        foreach (var link in _links ?? [])
        {
            link.Connection?.Dispose();

            // A connect still under way was cancelled by the stop; one that made it anyway is closed too.
            _ = link.Connecting?.ContinueWith(static t => t.Result.Dispose(), CancellationToken.None, TaskContinuationOptions.OnlyOnRanToCompletion, TaskScheduler.Default);
        }
    }
}
