using System.IO.Pipelines;
using System.Net;
using Microsoft.AspNetCore.Connections;
using Microsoft.AspNetCore.Http.Features;
using Microsoft.AspNetCore.Server.Kestrel.Transport.Sockets;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.DependencyInjection.Extensions;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;

namespace Pocket.Hosting;

/// <summary>
/// Kestrel's socket transport, accepting only while fewer than a bound of its connections are open: the next connect
/// waits in the kernel's listen backlog, not in a descriptor of the process. Kestrel's own connection limit
/// (<c>MaxConcurrentConnections</c>) accepts a connection before it refuses it, so a burst of connects takes a
/// descriptor each until Kestrel gets round to closing them: 300 connects held open by one peer took a metadata
/// server's last descriptors and the runtime, unable to start a thread, aborted the process ("Out of memory."). The
/// binary-protocol servers keep their connections within the process's descriptor budget themselves; this keeps a
/// Kestrel listener beside them within its bound.
/// </summary>
public static class BoundedConnections
{
    /// <summary>Makes Kestrel in <paramref name="services"/> accept at most <paramref name="limit"/> connections at once, per listener.</summary>
    public static IServiceCollection AddBoundedSocketTransport(this IServiceCollection services, int limit)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(limit);
        services.RemoveAll<IConnectionListenerFactory>();
        services.AddSingleton<IConnectionListenerFactory>(provider => new Factory(
            new SocketTransportFactory(provider.GetRequiredService<IOptions<SocketTransportOptions>>(), provider.GetRequiredService<ILoggerFactory>()),
            limit));
        return services;
    }

    private sealed class Factory(IConnectionListenerFactory inner, int limit) : IConnectionListenerFactory
    {
        public async ValueTask<IConnectionListener> BindAsync(EndPoint endpoint, CancellationToken cancellationToken = default) =>
            new Listener(await inner.BindAsync(endpoint, cancellationToken).ConfigureAwait(false), limit);
    }

    private sealed class Listener(IConnectionListener inner, int limit) : IConnectionListener
    {
        private readonly SemaphoreSlim _slots = new(limit, limit);

        public EndPoint EndPoint => inner.EndPoint;

        public async ValueTask<ConnectionContext?> AcceptAsync(CancellationToken cancellationToken = default)
        {
            // Unbinding ends a waiting accept with null, as the inner listener's would.
            try
            {
                await _slots.WaitAsync(cancellationToken).ConfigureAwait(false);
            }
            catch (OperationCanceledException)
            {
                return null;
            }

            ConnectionContext? accepted;
            try
            {
                accepted = await inner.AcceptAsync(cancellationToken).ConfigureAwait(false);
            }
            catch
            {
                _slots.Release();
                throw;
            }

            if (accepted is null)
            {
                _slots.Release();
                return null;
            }

            return new Slot(accepted, _slots);
        }

        public ValueTask UnbindAsync(CancellationToken cancellationToken = default) => inner.UnbindAsync(cancellationToken);

        public async ValueTask DisposeAsync()
        {
            await inner.DisposeAsync().ConfigureAwait(false);
            _slots.Dispose();
        }
    }

    /// <summary>An accepted connection that gives its slot back once Kestrel has disposed of it (its socket closed).</summary>
    private sealed class Slot(ConnectionContext inner, SemaphoreSlim slots) : ConnectionContext
    {
        private int _released;

        public override string ConnectionId { get => inner.ConnectionId; set => inner.ConnectionId = value; }

        public override IFeatureCollection Features => inner.Features;

        public override IDictionary<object, object?> Items { get => inner.Items; set => inner.Items = value; }

        public override IDuplexPipe Transport { get => inner.Transport; set => inner.Transport = value; }

        public override CancellationToken ConnectionClosed { get => inner.ConnectionClosed; set => inner.ConnectionClosed = value; }

        public override EndPoint? LocalEndPoint { get => inner.LocalEndPoint; set => inner.LocalEndPoint = value; }

        public override EndPoint? RemoteEndPoint { get => inner.RemoteEndPoint; set => inner.RemoteEndPoint = value; }

        public override void Abort(ConnectionAbortedException abortReason) => inner.Abort(abortReason);

        public override void Abort() => inner.Abort();

        public override async ValueTask DisposeAsync()
        {
            try
            {
                await inner.DisposeAsync().ConfigureAwait(false);
            }
            finally
            {
                if (Interlocked.Exchange(ref _released, 1) == 0)
                {
                    try
                    {
                        slots.Release();
                    }
                    catch (ObjectDisposedException)
                    {
                        // The listener is gone: nothing waits for the slot.
                    }
                }
            }
        }
    }
}
