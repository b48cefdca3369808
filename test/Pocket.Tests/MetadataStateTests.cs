using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.Extensions.Time.Testing;
using Pocket.Metadata;
using Pocket.Metadata.Nodes;
using Pocket.Protocol;
using Pocket.Protocol.Messages;

namespace Pocket.Tests;

/// <summary>
/// The metadata state and its node registry on their own: no server, no socket, a fake clock and a seeded placement
/// draw. The socket tests (RoundTrip, Drain, NodeFailure, KeepAfterJob...) cover the same operations end to end.
/// </summary>
public sealed class MetadataStateTests
{
    private const int Block = 4096;
    private static readonly TimeSpan NodeTimeout = TimeSpan.FromSeconds(5);

    private readonly FakeTimeProvider _time = new();
    private readonly MetadataState _state;

    public MetadataStateTests()
    {
        var options = new MetadataServerOptions { TimeProvider = _time, StripeUnit = 4 * Block, HddExtent = 4 * Block, NodeTimeout = NodeTimeout, InlineCapacity = 100 };
        _state = new MetadataState(options, NullLogger.Instance, new Random(5));
    }

    private NodeEntry AddNode(long blocks, NodeTier tier = NodeTier.Dram, bool standby = false, long connection = 1)
    {
        var body = new BodyWriter();
        RegisterNodeRequest.Write(body, tier, "127.0.0.1", 7000, blocks * Block, Block, new byte[RegisterNodeRequest.SecretSize], standby);
        Assert.True(RegisterNodeRequest.TryRead(body.WrittenSpan, out var request));
        return _state.RegisterNode(request, connection).Value;
    }

    private JobEntry AddJob(string name = "job")
    {
        var result = _state.RegisterJob(name, JobToken.None, NodeTier.Dram);
        Assert.True(result.IsOk);
        return result.Value;
    }

    private ulong Write(JobEntry job, string key, long size)
    {
        var open = _state.Create(job, key, size, FrameFlags.None, connectionId: 10);
        Assert.True(open.IsOk, open.Message);
        Assert.True(_state.Commit(job, open.Value.Handle, size).IsOk);
        return open.Value.Handle;
    }

    [Fact]
    public void JobIdsCountPerNameAndATokenBelongsToOneJob()
    {
        var first = AddJob("sort");
        Assert.Equal("sort-1", first.Id);
        Assert.Equal("sort-2", AddJob("sort").Id);
        var taken = _state.RegisterJob("other", first.Token, NodeTier.Dram);
        Assert.Equal(Status.Exists, taken.Status);
        Assert.Same(first, _state.FindJob(first.Token));
        Assert.Equal(1, first.Requests);
        Assert.Null(_state.FindJob(JobToken.NewRandom()));
    }

    [Fact]
    public void ACreatedKeyIsReservedAndCommitTrimsTheUnusedTail()
    {
        var node = AddNode(100);
        var job = AddJob();
        var open = _state.Create(job, "a", 10 * Block, FrameFlags.None, connectionId: 10);
        Assert.True(open.IsOk);
        Assert.Equal(10 * Block, open.Value.Extents.Sum(e => e.Length));
        Assert.Equal(90, node.Allocator.FreeBlocks);
        Assert.Equal(Status.Exists, _state.Create(job, "a", 0, FrameFlags.None, 10).Status);
        Assert.Equal(Status.Exists, _state.PutInline(job, "a", [1], FrameFlags.None).Status);
        Assert.Equal(Status.NotFound, _state.Lookup(job, "a").Status);

        Assert.Equal(Status.BadRequest, _state.Commit(job, open.Value.Handle, (10 * Block) + 1).Status);
        Assert.True(_state.Commit(job, open.Value.Handle, (2 * Block) + 1).IsOk);

        // Three blocks hold 2 blocks and a byte; the other seven are free again.
        Assert.Equal(97, node.Allocator.FreeBlocks);
        var info = _state.Lookup(job, "a");
        Assert.True(info.IsOk);
        Assert.Equal((2 * Block) + 1, info.Value.Size);
        Assert.Equal((2 * Block) + 1, info.Value.Extents.Sum(e => e.Length));
        Assert.All(info.Value.Extents, e => Assert.Equal(NodeState.Live, e.NodeState));
        Assert.Equal(Status.NotFound, _state.Commit(job, open.Value.Handle, 1).Status);
    }

    [Fact]
    public void AbortAndAClosedConnectionFreeAnOpenWrite()
    {
        var node = AddNode(100);
        var job = AddJob();
        var open = _state.Create(job, "a", 8 * Block, FrameFlags.None, connectionId: 10);
        Assert.True(_state.HoldsHandles(10));
        Assert.Equal(Status.NotFound, _state.Abort(AddJob("other"), open.Value.Handle).Status);
        Assert.True(_state.Abort(job, open.Value.Handle).IsOk);
        Assert.Equal(100, node.Allocator.FreeBlocks);

        _state.Create(job, "a", 8 * Block, FrameFlags.None, connectionId: 11);
        Assert.Empty(_state.ConnectionClosed(11));
        Assert.False(_state.HoldsHandles(11));
        Assert.Equal(100, node.Allocator.FreeBlocks);
        Assert.True(_state.Create(job, "a", 0, FrameFlags.None, 12).IsOk);
    }

    [Fact]
    public void InlineObjectsAreBoundedByTheInlineCapacity()
    {
        var job = AddJob();
        Assert.True(_state.PutInline(job, "a", new byte[60], FrameFlags.None).IsOk);
        Assert.Equal(Status.CapacityExceeded, _state.PutInline(job, "b", new byte[41], FrameFlags.None).Status);
        var read = _state.Get(job, "a", 10, 5, deleteAfterRead: true, connectionId: 10);
        Assert.True(read.IsOk);
        Assert.True(read.Value.IsInline);
        Assert.Equal(5, read.Value.Inline.Length);
        Assert.Equal(Status.NotFound, _state.Get(job, "a", 0, -1, false, 10).Status);
        Assert.True(_state.PutInline(job, "b", new byte[100], FrameFlags.None).IsOk);
    }

    [Fact]
    public void ADeleteAfterReadOfALargeObjectKeepsItsBlocksUntilTheReaderReleasesThem()
    {
        var node = AddNode(100);
        var job = AddJob();
        Write(job, "a", 4 * Block);
        var read = _state.Get(job, "a", 0, -1, deleteAfterRead: true, connectionId: 20);
        Assert.True(read.IsOk);
        Assert.NotEqual(0UL, read.Value.Release);
        Assert.Equal(Status.NotFound, _state.Lookup(job, "a").Status);
        Assert.Equal(96, node.Allocator.FreeBlocks);
        Assert.True(_state.Abort(job, read.Value.Release).IsOk);
        Assert.Equal(100, node.Allocator.FreeBlocks);
    }

    [Fact]
    public void AnObjectOnADeadNodeIsReportedLostAndACommitThereFails()
    {
        var node = AddNode(100, connection: 1);
        var job = AddJob();
        Write(job, "a", Block);
        var open = _state.Create(job, "b", Block, FrameFlags.None, connectionId: 10);

        var died = _state.ConnectionClosed(1);
        Assert.Equal([new NodeDeath(node.Id, "its connection to the metadata server closed")], died);
        var get = _state.Get(job, "a", 0, -1, false, 10);
        Assert.Equal(Status.NodeLost, get.Status);
        Assert.Contains($"storage node {node.Id}", get.Message, StringComparison.Ordinal);
        Assert.Equal(NodeState.Dead, _state.Lookup(job, "a").Value.Extents[0].NodeState);
        Assert.Equal(Status.NodeLost, _state.Commit(job, open.Value.Handle, Block).Status);
        Assert.Equal(Status.NoNodes, _state.Create(job, "c", Block, FrameFlags.None, 10).Status);
    }

    [Fact]
    public void DeregisteringFreesEverythingButKeepAfterJobObjectsWhichExpireLater()
    {
        var node = AddNode(100);
        var job = AddJob();
        Write(job, "gone", 2 * Block);
        var open = _state.Create(job, "kept", Block, FrameFlags.KeepAfterJob, connectionId: 10);
        _state.Commit(job, open.Value.Handle, Block);
        _state.Create(job, "unfinished", Block, FrameFlags.None, connectionId: 10);

        var removal = _state.DeregisterJob(job.Id);
        // The object memory freed: "gone" and the unfinished write's reservation ("kept" stays counted).
        var freed = MetadataState.ObjectMemoryOf("gone", 0) + MetadataState.ObjectMemoryOf("unfinished", 0);
        Assert.Equal(new JobRemoval(1, 2 * Block, Retired: true) { Memory = freed }, removal.Value);
        Assert.Equal(99, node.Allocator.FreeBlocks);
        Assert.Equal(Status.NotFound, _state.DeregisterJob(job.Id).Status);

        // Read-only under its token until the time to live runs out.
        Assert.Same(job, _state.FindJob(job.Token));
        Assert.True(_state.Get(job, "kept", 0, -1, false, 10).IsOk);
        Assert.Equal(Status.Unauthorized, _state.PutInline(job, "x", [1], FrameFlags.None).Status);
        Assert.Equal(Status.Unauthorized, _state.Create(job, "x", 0, FrameFlags.None, 10).Status);

        _time.Advance(new MetadataServerOptions().KeepAfterJobTtl - TimeSpan.FromSeconds(1));
        Assert.Empty(_state.ExpireRetiredJobs());
        _time.Advance(TimeSpan.FromSeconds(2));
        Assert.Equal([(job.Id, 1L, MetadataState.ObjectMemoryOf("kept", 0))], _state.ExpireRetiredJobs());
        Assert.Null(_state.FindJob(job.Token));
        Assert.Equal(100, node.Allocator.FreeBlocks);
    }

    [Fact]
    public void WeightsSteerPlacementAndAnEmptyMapMeansTheWholeTier()
    {
        var a = AddNode(1000);
        var b = AddNode(1000);
        var job = AddJob();
        Assert.True(_state.SetWeights(job.Id, new Dictionary<uint, double> { [b.Id] = 1 }, NodeTier.Dram).IsOk);
        Write(job, "only-b", 40 * Block);
        Assert.Equal(1000, a.Allocator.FreeBlocks);

        Assert.True(_state.SetWeights(job.Id, new Dictionary<uint, double>(), null).IsOk);
        Write(job, "both", 400 * Block);
        Assert.True(a.Allocator.FreeBlocks < 1000, "an empty map spreads over every node of the tier");
        Assert.Equal(Status.NotFound, _state.SetWeights("nope-1", new Dictionary<uint, double>(), null).Status);
    }

    [Fact]
    public void ListPagesFoldDirectoriesAndCountSeesEveryKey()
    {
        var job = AddJob();
        foreach (var key in new[] { "a/1", "a/2", "b", "c/x/1", "d" })
        {
            Assert.True(_state.PutInline(job, key, [1], FrameFlags.None).IsOk);
        }

        var sink = new CollectingSink([]);
        var end = _state.List(job, "", "", 2, delimited: true, ref sink);
        Assert.Equal(["a/", "b"], sink.Keys);
        Assert.Equal("b", end.Next.ToString());

        sink = new CollectingSink([]);
        end = _state.List(job, "", end.Next.ToString(), 10, delimited: true, ref sink);
        Assert.Equal(["c/", "d"], sink.Keys);
        Assert.Equal(0, end.Next.Length);
        Assert.Equal(5, _state.Count(job, ""));
        Assert.Equal(2, _state.Count(job, "a/"));
        Assert.Equal(2, _state.Delete(job, "a/", recursive: true).Value);
        Assert.Equal(Status.NotFound, _state.Delete(job, "a/1", recursive: false).Status);
    }

    [Fact]
    public void ASilentNodeIsDeclaredDeadOnceAndAHeartbeatOnlyCountsFromItsOwnConnection()
    {
        var node = AddNode(10, connection: 1);
        Assert.Equal(Status.NotFound, _state.Heartbeat(new HeartbeatRequest(node.Id, 0.5, 1, 2, 0), connectionId: 2).Status);
        _time.Advance(NodeTimeout - TimeSpan.FromSeconds(1));
        Assert.True(_state.Heartbeat(new HeartbeatRequest(node.Id, 0.5, 1, 2, 0), connectionId: 1).IsOk);
        Assert.Equal(0.5, node.Cpu);
        _time.Advance(NodeTimeout);
        Assert.Empty(_state.CheckLiveness());
        _time.Advance(TimeSpan.FromSeconds(1.5));
        var died = Assert.Single(_state.CheckLiveness());
        Assert.Equal(node.Id, died.NodeId);
        Assert.Contains("no heartbeat for 5 s", died.Reason, StringComparison.Ordinal);
        Assert.Empty(_state.CheckLiveness());
        Assert.Equal(Status.NotFound, _state.Heartbeat(new HeartbeatRequest(node.Id, 0, 0, 0, 0), connectionId: 1).Status);
        Assert.Equal(NodeState.Dead, Assert.Single(_state.ListNodes(JobToken.None, admin: true).Value).State);
    }

    [Fact]
    public void ASilentNodeIsSuspectFirstAndComesBackWithItsBlocksAtItsNextHeartbeat()
    {
        // Suspect after 3 s (the default), dead after 5 s (this fixture's node timeout).
        var node = AddNode(100, connection: 1);
        var job = AddJob();
        Write(job, "kept", 8 * Block);
        State(NodeState.Live);

        _time.Advance(TimeSpan.FromSeconds(3.5));
        Assert.Empty(_state.CheckLiveness());
        State(NodeState.Suspect);

        // Readers get a typed, retryable refusal instead of grants for a node that may not answer; no new blocks go there.
        var read = _state.Get(job, "kept", 0, -1, deleteAfterRead: false, connectionId: 10);
        Assert.Equal(Status.NodeUnavailable, read.Status);
        Assert.Contains($"storage node {node.Id} (127.0.0.1:7000), silent for 3.5 s", read.Message, StringComparison.Ordinal);
        Assert.Contains("retry shortly", read.Message, StringComparison.Ordinal);
        Assert.Equal(Status.NoNodes, _state.Create(job, "new", Block, FrameFlags.None, 10).Status);

        // Its heartbeat (on its own connection) brings it back as it was, its blocks readable and placeable again.
        Assert.True(_state.Heartbeat(new HeartbeatRequest(node.Id, 0.1, 0, 0, 0), connectionId: 1).IsOk);
        State(NodeState.Live);
        Assert.True(_state.Get(job, "kept", 0, -1, deleteAfterRead: false, connectionId: 10).IsOk);
        Assert.True(_state.Create(job, "new", Block, FrameFlags.None, 10).IsOk);

        // Silent past the node timeout: suspect on the way, then dead for good, and the object is lost.
        _time.Advance(TimeSpan.FromSeconds(4));
        Assert.Empty(_state.CheckLiveness());
        State(NodeState.Suspect);
        _time.Advance(TimeSpan.FromSeconds(1.5));
        Assert.Equal(node.Id, Assert.Single(_state.CheckLiveness()).NodeId);
        State(NodeState.Dead);
        Assert.Equal(Status.NodeLost, _state.Get(job, "kept", 0, -1, deleteAfterRead: false, connectionId: 10).Status);
        Assert.Equal(Status.NotFound, _state.Heartbeat(new HeartbeatRequest(node.Id, 0, 0, 0, 0), connectionId: 1).Status);

        void State(NodeState expected) => Assert.Equal(expected, Assert.Single(_state.ListNodes(JobToken.None, admin: true).Value).State);
    }

    [Fact]
    public void AStandbyNodeTakesNoBlocksUntilActivatedAndDrainsAtOnce()
    {
        var standby = AddNode(10, standby: true, connection: 1);
        var job = AddJob();
        Assert.Equal(Status.NoNodes, _state.Create(job, "a", Block, FrameFlags.None, 10).Status);
        Assert.True(_state.ActivateNode(standby.Id).IsOk);
        Assert.True(_state.Create(job, "a", Block, FrameFlags.None, 10).IsOk);

        var other = AddNode(10, standby: true, connection: 2);
        Assert.Equal(DrainStart.NothingToStart, _state.BeginDrain(other.Id).Value);
        Assert.Equal(NodeState.Drained, other.State);
        Assert.Equal(Status.NotFound, _state.ActivateNode(other.Id).Status);

        // A drained node that stops is removed, not declared dead.
        Assert.Empty(_state.ConnectionClosed(2));
        Assert.False(_state.Nodes.TryGet(other.Id, out _));
        Assert.True(_state.Nodes.SecretOf(other.Id).IsEmpty);
        Assert.Equal(Status.NotFound, _state.BeginDrain(other.Id).Status);
    }

    [Fact]
    public void ADrainMovesEachExtentAndFreesTheOldOnesWhenTheNodeIsDrained()
    {
        var source = AddNode(100);
        var job = AddJob();
        Write(job, "a", 6 * Block);
        var target = AddNode(100);

        Assert.Equal(DrainStart.Started, _state.BeginDrain(source.Id).Value);
        Assert.Equal(DrainStart.NothingToStart, _state.BeginDrain(source.Id).Value);
        var pass = _state.NextDrainPass(source.Id);
        Assert.False(pass.Finished);
        Assert.Equal(6 * Block, pass.Work.Sum(w => w.Extent.Length));

        foreach (var work in pass.Work)
        {
            var copies = _state.ReserveCopy(source.Id, work)!;
            Assert.All(copies, c => Assert.Equal(target.Id, c.NodeId));
            Assert.True(_state.SwitchToCopies(source.Id, work, copies));

            // A second switch of the same extent finds it gone: the caller frees its copies.
            Assert.False(_state.SwitchToCopies(source.Id, work, copies));
        }

        Assert.All(_state.Lookup(job, "a").Value.Extents, e => Assert.Equal(target.Id, e.NodeId));
        Assert.Equal(94, source.Allocator.FreeBlocks);
        Assert.Equal(6 * Block, source.MovedBytes);

        pass = _state.NextDrainPass(source.Id);
        Assert.True(pass.Finished);
        Assert.Equal(NodeState.Drained, source.State);
        Assert.Equal(100, source.Allocator.FreeBlocks);
        Assert.Equal(94, target.Allocator.FreeBlocks);
    }

    [Fact]
    public void ADrainWaitsForOpenWritesOnTheNode()
    {
        var source = AddNode(100);
        var job = AddJob();
        var open = _state.Create(job, "a", Block, FrameFlags.None, connectionId: 10);
        _state.BeginDrain(source.Id);
        var pass = _state.NextDrainPass(source.Id);
        Assert.False(pass.Finished);
        Assert.Empty(pass.Work);
        _state.Abort(job, open.Value.Handle);
        Assert.True(_state.NextDrainPass(source.Id).Finished);
    }

    private readonly struct CollectingSink(List<string> keys) : IListSink
    {
        public List<string> Keys => keys;

        public void Entry(ReadOnlySpan<char> key, long size, bool isPrefix) => keys.Add(key.ToString());
    }
}
