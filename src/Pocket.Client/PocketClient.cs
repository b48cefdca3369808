using System.Buffers;
using System.Collections.Concurrent;
using System.Runtime.CompilerServices;
using Pocket.Networking;
using Pocket.Protocol;
using Pocket.Protocol.Messages;

namespace Pocket.Client;

/// <summary>
/// The entry point to a Pocket cluster. Long-lived and thread-safe: create one per process and share it.
/// It keeps one multiplexed connection to the metadata server and one to each storage node it talks to.
/// </summary>
public sealed partial class PocketClient : IAsyncDisposable
{
    // One lock for its writes (a node's first connection, a dead one's removal: rare) and room for a few nodes: the
    // default (a lock per core, 31 buckets) is sized for many concurrent writers, and every fresh client makes one.
    private readonly ConcurrentDictionary<uint, Lazy<Task<FrameConnection>>> _nodeConnections = new(concurrencyLevel: 1, capacity: 4);
    private readonly ConcurrentDictionary<uint, ReadBudget> _readBudgets = new(concurrencyLevel: 1, capacity: 4);
    private readonly SemaphoreSlim _metadataLock = new(1, 1);
    private readonly string _metadataHost;
    private readonly int _metadataPort;
    private volatile FrameConnection? _metadata;
    // Where each storage node listens: filled by ListNodes, or by the addresses a Create or Get reply carries.
    private volatile Dictionary<uint, NodeEndpoint> _nodes = [];
    private long _nodeListings;
    private volatile bool _disposed;

    private PocketClient(string host, int port, PocketClientOptions options)
    {
        _metadataHost = host;
        _metadataPort = port;
        Options = options;
        ConnectionOptions = new FrameConnectionOptions
        {
            MaxInFlight = options.MaxInFlightPerConnection,
            ConnectTimeout = options.ConnectTimeout,
            RequestTimeout = options.RequestTimeout,
            TlsHost = options.TlsHost,
            CertificateValidation = options.CertificateValidation,
        };
    }

    /// <summary>The options this client was made with.</summary>
    public PocketClientOptions Options { get; }

    internal FrameConnectionOptions ConnectionOptions { get; }

    internal FrameConnection? MetadataConnection => _metadata;

    /// <summary>The storage node connections opened so far (tests).</summary>
    internal IReadOnlyList<FrameConnection> NodeConnections =>
        [.. _nodeConnections.Values.Where(l => l.IsValueCreated && l.Value.IsCompletedSuccessfully).Select(l => l.Value.Result)];

    /// <summary>The metadata server this client talks to, as host:port.</summary>
    public string MetadataAddress => $"{_metadataHost}:{_metadataPort}";

    /// <summary>Connects to the metadata server at <paramref name="address"/> ("host:port").</summary>
    /// <exception cref="PocketUnreachableException">The metadata server could not be reached.</exception>
    public static async Task<PocketClient> ConnectAsync(string address, PocketClientOptions? options = null, CancellationToken cancellationToken = default)
    {
        var (host, port) = ParseAddress(address);
        var client = new PocketClient(host, port, options ?? new PocketClientOptions());
        try
        {
            // No caller has the client yet, so its first connection needs neither the reconnect path's lock nor its
            // async level: a function's cold start awaits the connect itself.
            client._metadata = await FrameConnection.ConnectAsync(host, port, client.ConnectionOptions, cancellationToken).ConfigureAwait(false);
        }
        catch (ConnectionLostException ex)
        {
            // The networking layer's exception stays inside the client: callers see the client's own.
            await client.DisposeAsync().ConfigureAwait(false);
            throw new PocketUnreachableException($"metadata server {address} unreachable: {ex.Message}", ex);
        }

        return client;
    }

    internal static (string Host, int Port) ParseAddress(string address)
    {
        var colon = address.LastIndexOf(':');
        if (colon <= 0 || !int.TryParse(address.AsSpan(colon + 1), out var port) || port is <= 0 or > 65535)
        {
            throw new ArgumentException($"address '{address}' is not host:port", nameof(address));
        }

        return (address[..colon].Trim('[', ']'), port);
    }

    /// <summary>A handle on an existing job, from its id and token.</summary>
    public PocketJob OpenJob(string jobId, JobToken token) => new(this, jobId, token);

    // The cluster token lists every node (PocketAdminClient); a job's token does too (PocketJob.GetNodesAsync), and a
    // client made for one job asks with it before it first contacts a node.
    internal async Task<IReadOnlyList<NodeInfo>> ListNodesAsync(JobToken token, CancellationToken cancellationToken)
    {
        Interlocked.Increment(ref _nodeListings);
        var reply = await SendMetadataAsync(Opcode.ListNodes, FrameFlags.None, token, default, cancellationToken).ConfigureAwait(false);
        if (!ListNodesReply.TryRead(reply.Body, out var records))
        {
            throw new PocketException(Status.BadRequest, "malformed list-nodes reply from the metadata server");
        }

        var nodes = new List<NodeInfo>(records.Length);
        foreach (var n in records)
        {
            nodes.Add(new NodeInfo(n.Id, n.Tier, n.State, n.Host, n.Port, n.Capacity, n.Used, n.Cpu, n.NetRx, n.NetTx) { MovedBytes = n.MovedBytes });
        }

        _nodes = nodes.ToDictionary(n => n.Id, n => new NodeEndpoint(n.Host, n.Port));
        return nodes;
    }

    /// <summary>ListNodes requests this client sent (tests: a fresh client's first put and get need none).</summary>
    internal long NodeListings => Interlocked.Read(ref _nodeListings);

    /// <summary>
    /// Asks a Create or Get to carry its nodes' addresses while this client knows no node: a fresh client's first
    /// put or get of a large object then needs no ListNodes round trip, and as the reply names the job's other nodes
    /// too, nor does a later one that reaches another of them. A server older than the flag ignores it.
    /// </summary>
    internal FrameFlags NodeAddressesFlag => _nodes.Count == 0 ? FrameFlags.NodeAddresses : FrameFlags.None;

    /// <summary>Adds the addresses a reply carried to those this client knows.</summary>
    internal void LearnNodes(NodeAddress[] nodes)
    {
        if (nodes.Length == 0)
        {
            return;
        }

        // Copied, then swapped: readers use the dictionary without a lock.
        var known = new Dictionary<uint, NodeEndpoint>(_nodes);
        foreach (var node in nodes)
        {
            known[node.Id] = new NodeEndpoint(node.Host, node.Port);
        }

        _nodes = known;
    }

    /// <summary>Where one storage node listens.</summary>
    private sealed record NodeEndpoint(string Host, int Port)
    {
        public string Address => $"{Host}:{Port}";
    }

    internal async ValueTask<FrameConnection> MetadataAsync(CancellationToken cancellationToken)
    {
        // A disposed client must not quietly reconnect (a put in flight would then commit after all).
        ObjectDisposedException.ThrowIf(_disposed, this);
        var connection = _metadata;
        if (connection is { IsConnected: true })
        {
            return connection;
        }

        await _metadataLock.WaitAsync(cancellationToken).ConfigureAwait(false);
        try
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            if (_metadata is { IsConnected: true } current)
            {
                return current;
            }

            _metadata?.Dispose();
            _metadata = await FrameConnection.ConnectAsync(_metadataHost, _metadataPort, ConnectionOptions, cancellationToken).ConfigureAwait(false);
            return _metadata;
        }
        finally
        {
            _metadataLock.Release();
        }
    }

    /// <summary>
    /// Sends a request to the metadata server and throws a typed exception unless the reply is OK. An OK reply that
    /// fits <paramref name="replyInto"/> is read into it (then <see cref="FrameReply.Body"/> is empty; see <see cref="ReplyBody"/>);
    /// of a longer one, the first <paramref name="replyHead"/> bytes (see <see cref="FrameConnection.SendAsync"/>).
    /// </summary>
    /// <remarks>
    /// A job's request (<paramref name="jobId"/> set) whose connection fails asks, once the server answers again, what
    /// happened to the job (<see cref="JobFateAsync"/>), so a job lost with its metadata server gets
    /// <see cref="PocketJobLostException"/> rather than a bare connection error. Only the failure path pays for it.
    /// </remarks>
    [AsyncMethodBuilder(typeof(PoolingAsyncValueTaskMethodBuilder<>))]
    internal async ValueTask<FrameReply> SendMetadataAsync(Opcode opcode, FrameFlags flags, JobToken token, ReadOnlyMemory<byte> body, CancellationToken cancellationToken, ReadOnlyMemory<byte> data = default, Memory<byte> replyInto = default, string? jobId = null, int replyHead = 0)
    {
        FrameReply reply;
        try
        {
            var connection = _metadata is { IsConnected: true } current && !_disposed ? current : await MetadataAsync(cancellationToken).ConfigureAwait(false);
            try
            {
                reply = await connection.SendAsync(opcode, flags, token, body, data, replyInto, replyHead, cancellationToken).ConfigureAwait(false);
            }
            catch (ConnectionLostException ex) when (ex.NotSent)
            {
                // The connection broke before the request went out (the server closes idle connections): a new one.
                connection = await MetadataAsync(cancellationToken).ConfigureAwait(false);
                reply = await connection.SendAsync(opcode, flags, token, body, data, replyInto, replyHead, cancellationToken).ConfigureAwait(false);
            }
        }
        catch (ConnectionLostException ex)
        {
            throw await MetadataLostAsync(ex, jobId, token, cancellationToken).ConfigureAwait(false);
        }

        return Checked(reply);
    }

    /// <summary>
    /// The metadata connection when it is up, for a request's fast path: the caller awaits the connection's request
    /// itself (no async level of the client's between it and the reply), checks the reply with <see cref="Checked"/>
    /// and hands a <see cref="ConnectionLostException"/> to <see cref="ResendMetadataAsync"/>, which does what
    /// <see cref="SendMetadataAsync"/> does for it. Null when a request must take <see cref="SendMetadataAsync"/>.
    /// </summary>
    internal FrameConnection? ConnectedMetadata => _metadata is { IsConnected: true } current && !_disposed ? current : null;

    /// <summary>An OK reply as it is; any other becomes its typed exception.</summary>
    internal static FrameReply Checked(in FrameReply reply) => reply.IsOk ? reply : throw PocketException.From(reply.Status, reply.Message);

    /// <summary>
    /// A request sent on <see cref="ConnectedMetadata"/> lost its connection: one that never left goes again on a new
    /// connection (<see cref="SendMetadataAsync"/>, reply checked); otherwise the failure becomes the client's exception.
    /// </summary>
    internal async ValueTask<FrameReply> ResendMetadataAsync(ConnectionLostException lost, Opcode opcode, FrameFlags flags, JobToken token, ReadOnlyMemory<byte> body, CancellationToken cancellationToken, Memory<byte> replyInto = default, string? jobId = null, ReadOnlyMemory<byte> data = default, int replyHead = 0)
    {
        if (lost.NotSent && !_disposed)
        {
            return await SendMetadataAsync(opcode, flags, token, body, cancellationToken, data, replyInto, jobId, replyHead).ConfigureAwait(false);
        }

        throw await MetadataLostAsync(lost, jobId, token, cancellationToken).ConfigureAwait(false);
    }

    /// <summary>What a caller gets when its request lost the metadata connection: see <see cref="SendMetadataAsync"/>.</summary>
    private async ValueTask<PocketException> MetadataLostAsync(ConnectionLostException lost, string? jobId, JobToken token, CancellationToken cancellationToken)
    {
        var unreachable = new PocketException(Status.InternalError, $"metadata server {MetadataAddress} unreachable: {lost.Message}", lost);
        return jobId is null || Options.JobLostWait <= TimeSpan.Zero ? unreachable : await JobFateAsync(jobId, token, unreachable, cancellationToken).ConfigureAwait(false);
    }

    /// <summary>
    /// After a job's request lost the metadata connection: reconnects for up to <see cref="PocketClientOptions.JobLostWait"/>
    /// (a lost server's replacement comes up at its address within seconds) and asks about the job with its token. A
    /// <see cref="Status.JobLost"/> answer becomes <see cref="PocketJobLostException"/>; any other refusal its own
    /// exception; an OK (the server is fine, only the connection broke) or no answer in time, <paramref name="unreachable"/>.
    /// </summary>
    private async Task<PocketException> JobFateAsync(string jobId, JobToken token, PocketException unreachable, CancellationToken cancellationToken)
    {
        var deadline = DateTime.UtcNow + Options.JobLostWait;
        var request = new BodyWriter(sizeof(ushort));
        JobStatsRequest.Write(request, string.Empty);
        while (true)
        {
            try
            {
                var connection = await MetadataAsync(cancellationToken).ConfigureAwait(false);
                var reply = await connection.SendAsync(Opcode.JobStats, FrameFlags.None, token, request.WrittenMemory, cancellationToken: cancellationToken).ConfigureAwait(false);
                return reply.IsOk ? unreachable : PocketException.From(reply.Status, reply.Message);
            }
            catch (ConnectionLostException)
            {
                if (DateTime.UtcNow >= deadline)
                {
                    return new PocketException(
                        Status.InternalError,
                        $"{unreachable.Message} (job {jobId}: no metadata server answered at {MetadataAddress} within {Options.JobLostWait.TotalSeconds:0} s)",
                        unreachable.InnerException);
                }
            }

            await Task.Delay(JobFatePause, cancellationToken).ConfigureAwait(false);
        }
    }

    private static readonly TimeSpan JobFatePause = TimeSpan.FromMilliseconds(250);

    /// <summary>Reply buffers up to this size are kept by <see cref="ReturnReplyBuffer"/>.</summary>
    private const int MaxKeptReplyBuffer = 4 << 10;

    // One reply buffer kept for this client's next small request. A request holds its reply buffer from send to reply,
    // so with thousands of requests in flight (a fan-in of one client per connection) the shared array pool had none
    // left and every get allocated a new 32 KiB array: the fan-in client's garbage, page faults and background GCs.
    private byte[]? _replyBuffer;

    /// <summary>
    /// A buffer of at least <paramref name="size"/> bytes for a reply: the one this client keeps when it is free and
    /// large enough, else one from the shared pool. Give it back with <see cref="ReturnReplyBuffer"/>.
    /// </summary>
    internal byte[] RentReplyBuffer(int size)
    {
        var kept = Interlocked.Exchange(ref _replyBuffer, null);
        if (kept is not null)
        {
            if (kept.Length >= size)
            {
                return kept;
            }

            ArrayPool<byte>.Shared.Return(kept);
        }

        return ArrayPool<byte>.Shared.Rent(size);
    }

    internal void ReturnReplyBuffer(byte[] buffer)
    {
        if (buffer.Length > MaxKeptReplyBuffer || Interlocked.CompareExchange(ref _replyBuffer, buffer, null) is not null)
        {
            ArrayPool<byte>.Shared.Return(buffer);
        }
    }

    /// <summary>The body of a reply sent with a reply buffer: in that buffer, unless it did not fit.</summary>
    internal static ReadOnlySpan<byte> ReplyBody(in FrameReply reply, byte[] replyInto) =>
        IsInReplyBuffer(reply) ? replyInto.AsSpan(0, reply.DataLength) : reply.Body;

    /// <summary>True when a reply sent with a reply buffer was read into that buffer (its first <see cref="FrameReply.DataLength"/> bytes).</summary>
    internal static bool IsInReplyBuffer(in FrameReply reply) => reply.Body.Length == 0 && reply.DataLength > 0;

    /// <summary>The reply bytes this client may have asked node <paramref name="nodeId"/> for at once (see <see cref="ReadBudget"/>).</summary>
    internal ReadBudget ReadBudgetOf(uint nodeId) => _readBudgets.GetOrAdd(nodeId, static _ => new ReadBudget(ReadBudget.Default));

    internal ValueTask<FrameConnection> NodeAsync(uint nodeId, string key, JobToken token, CancellationToken cancellationToken)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        if (_nodeConnections.TryGetValue(nodeId, out var lazy) && lazy.IsValueCreated && lazy.Value.IsCompletedSuccessfully && lazy.Value.Result is { IsConnected: true } connection)
        {
            return new ValueTask<FrameConnection>(connection);
        }

        return ConnectNodeAsync(nodeId, key, token, cancellationToken);
    }

    // The job's token asks for the node list: a client made for one job has no cluster token.
    private async ValueTask<FrameConnection> ConnectNodeAsync(uint nodeId, string key, JobToken token, CancellationToken cancellationToken)
    {
        if (!_nodes.ContainsKey(nodeId))
        {
            await ListNodesAsync(token, cancellationToken).ConfigureAwait(false);
        }

        if (!_nodes.TryGetValue(nodeId, out var node))
        {
            throw new NodeLostException($"object '{key}' lost: storage node {nodeId} is unknown to the metadata server");
        }

        while (true)
        {
            var lazy = _nodeConnections.GetOrAdd(nodeId, _ => new Lazy<Task<FrameConnection>>(() => FrameConnection.ConnectAsync(node.Host, node.Port, ConnectionOptions, CancellationToken.None)));
            try
            {
                var connection = await lazy.Value.WaitAsync(cancellationToken).ConfigureAwait(false);
                if (connection.IsConnected)
                {
                    return connection;
                }

                // A dead connection is replaced once; if the node is really gone the new connect fails below.
                _nodeConnections.TryRemove(new KeyValuePair<uint, Lazy<Task<FrameConnection>>>(nodeId, lazy));
                connection.Dispose();
            }
            catch (ConnectionLostException ex)
            {
                _nodeConnections.TryRemove(new KeyValuePair<uint, Lazy<Task<FrameConnection>>>(nodeId, lazy));
                throw new NodeLostException($"object '{key}' lost: storage node {nodeId} ({node.Address}) unreachable: {ex.Message}", ex);
            }
        }
    }

    /// <summary>Closes every connection.</summary>
    public async ValueTask DisposeAsync()
    {
        _disposed = true;
        _metadata?.Dispose();
        foreach (var lazy in _nodeConnections.Values)
        {
            if (lazy.IsValueCreated && lazy.Value.IsCompletedSuccessfully)
            {
                await lazy.Value.Result.DisposeAsync().ConfigureAwait(false);
            }
        }

        _nodeConnections.Clear();
    }
}
