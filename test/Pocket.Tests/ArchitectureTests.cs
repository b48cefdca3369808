using System.Reflection.Metadata;
using System.Reflection.PortableExecutable;

namespace Pocket.Tests;

/// <summary>
/// The dependency rules of docs/architecture.md, read from the built assemblies: each Pocket assembly may reference only
/// the Pocket assemblies its row allows, and the "never" pairs hold through any chain of references as well.
/// </summary>
public sealed class ArchitectureTests
{
    // Every shipped assembly and the Pocket assemblies it may reference directly. A new assembly fails the test until
    // it gets a row here (and a place in the picture in docs/architecture.md).
    private static readonly Dictionary<string, string[]> Allowed = new()
    {
        ["Pocket.Protocol"] = [],
        ["Pocket.Storage"] = [],
        ["Pocket.Hosting"] = [],
        ["Pocket.Networking"] = ["Pocket.Protocol"],
        ["Pocket.StorageServer"] = ["Pocket.Protocol", "Pocket.Networking", "Pocket.Storage"],
        ["Pocket.Metadata"] = ["Pocket.Protocol", "Pocket.Networking"],
        ["Pocket.Client"] = ["Pocket.Protocol", "Pocket.Networking"],
        // Cluster administration (cluster token) over a PocketClient's connection (whose replies are Networking's
        // FrameReply): the controller, the CLI, the gateway.
        ["Pocket.Admin"] = ["Pocket.Protocol", "Pocket.Networking", "Pocket.Client"],
        // The controller's HTTP contract: what the controller answers and what its callers (CLI, gateway) read.
        ["Pocket.Controller.Contracts"] = ["Pocket.Protocol", "Pocket.Client"],
        ["Pocket.Controller"] = ["Pocket.Protocol", "Pocket.Networking", "Pocket.Client", "Pocket.Admin", "Pocket.Controller.Contracts", "Pocket.Hosting"],
        ["Pocket.Kubernetes"] = ["Pocket.Protocol", "Pocket.Client", "Pocket.Controller"],
        // Networking for PortInUseException only: every listener, binary or HTTP, names a busy port the same way.
        ["Pocket.Gateway"] = ["Pocket.Protocol", "Pocket.Networking", "Pocket.Client", "Pocket.Admin", "Pocket.Controller.Contracts", "Pocket.Hosting"],
        ["Pocket.Metrics"] = ["Pocket.Protocol", "Pocket.Networking", "Pocket.Metadata", "Pocket.StorageServer", "Pocket.Storage", "Pocket.Hosting"],
        // The load generator of `pocket bench`: drives a cluster through the client and the controller's contract,
        // never a server role in its own process (the bench cluster is started by the CLI). Networking for the client
        // loops only: its raw RESP connections to the peers are read by the same loops as Pocket's own connections.
        ["Pocket.LoadGenerator"] = ["Pocket.Protocol", "Pocket.Networking", "Pocket.Client", "Pocket.Controller.Contracts"],
        ["Pocket.Embedded"] = ["Pocket.Protocol", "Pocket.Networking", "Pocket.Storage", "Pocket.StorageServer", "Pocket.Metadata", "Pocket.Client", "Pocket.Admin", "Pocket.Controller"],
        ["pocket"] = ["Pocket.Protocol", "Pocket.Networking", "Pocket.Storage", "Pocket.StorageServer", "Pocket.Metadata", "Pocket.Client", "Pocket.Admin", "Pocket.Controller.Contracts", "Pocket.Controller", "Pocket.Hosting", "Pocket.Kubernetes", "Pocket.Gateway", "Pocket.Embedded", "Pocket.Metrics", "Pocket.LoadGenerator"],
    };

    // The whiteboard's "never" list: not directly, and not through anything in between.
    private static readonly (string From, string To)[] Never =
    [
        ("Pocket.Protocol", "Pocket.Networking"),
        ("Pocket.Storage", "Pocket.Protocol"),
        ("Pocket.Storage", "Pocket.Networking"),
        ("Pocket.Client", "Pocket.Metadata"),
        ("Pocket.Client", "Pocket.StorageServer"),
        ("Pocket.Client", "Pocket.Controller"),
        ("Pocket.Client", "Pocket.Controller.Contracts"),
        ("Pocket.Client", "Pocket.Admin"),
        ("Pocket.Controller.Contracts", "Pocket.Controller"),
        ("Pocket.Gateway", "Pocket.Controller"),
        ("Pocket.Metadata", "Pocket.Controller"),
        ("Pocket.Metadata", "Pocket.StorageServer"),
        ("Pocket.StorageServer", "Pocket.Metadata"),
        ("Pocket.Controller", "Pocket.Embedded"),
        ("Pocket.Controller", "Pocket.Metadata"),
        ("Pocket.Controller", "Pocket.StorageServer"),
        ("Pocket.Controller", "Pocket.Storage"),
        ("Pocket.Kubernetes", "Pocket.Embedded"),
        ("Pocket.Kubernetes", "Pocket.Metadata"),
        ("Pocket.Gateway", "Pocket.Metadata"),
        ("Pocket.Gateway", "Pocket.StorageServer"),
        ("Pocket.Gateway", "Pocket.Embedded"),
        ("Pocket.LoadGenerator", "Pocket.Metadata"),
        ("Pocket.LoadGenerator", "Pocket.StorageServer"),
        ("Pocket.LoadGenerator", "Pocket.Controller"),
        ("Pocket.LoadGenerator", "Pocket.Embedded"),
    ];

    private static Dictionary<string, string[]> Actual()
    {
        var references = new Dictionary<string, string[]>();
        foreach (var name in Allowed.Keys)
        {
            // Read the metadata without loading: the references the compiler kept, i.e. the ones the code uses.
            using var pe = new PEReader(File.OpenRead(Path.Combine(AppContext.BaseDirectory, name + ".dll")));
            var metadata = pe.GetMetadataReader();
            references[name] = [.. metadata.AssemblyReferences.Select(r => metadata.GetString(metadata.GetAssemblyReference(r).Name)).Where(IsPocket).Order(StringComparer.Ordinal)];
        }

        return references;
    }

    private static bool IsPocket(string name) => name.StartsWith("Pocket.", StringComparison.Ordinal) || name == "pocket";

    [Fact]
    public void EveryPocketAssemblyHasARowInTheMatrix()
    {
        var built = Directory.EnumerateFiles(AppContext.BaseDirectory, "*.dll")
            .Select(Path.GetFileNameWithoutExtension)
            .Where(n => IsPocket(n!) && !n!.EndsWith(".Tests", StringComparison.Ordinal))
            .Order(StringComparer.Ordinal);
        Assert.Equal(Allowed.Keys.Order(StringComparer.Ordinal), built!);
    }

    [Fact]
    public void EachAssemblyReferencesOnlyWhatItsRowAllows()
    {
        var broken = Actual()
            .SelectMany(pair => pair.Value.Except(Allowed[pair.Key]).Select(to => $"{pair.Key} -> {to}"))
            .ToList();
        Assert.True(broken.Count == 0, $"references outside the allowed matrix: {string.Join(", ", broken)}");
    }

    [Fact]
    public void TheNeverListHoldsThroughEveryChainOfReferences()
    {
        var actual = Actual();
        HashSet<string> Reach(string from)
        {
            var seen = new HashSet<string>();
            var todo = new Stack<string>(actual[from]);
            while (todo.TryPop(out var next))
            {
                if (seen.Add(next) && actual.TryGetValue(next, out var further))
                {
                    foreach (var f in further)
                    {
                        todo.Push(f);
                    }
                }
            }

            return seen;
        }

        var broken = Never.Where(rule => Reach(rule.From).Contains(rule.To)).Select(rule => $"{rule.From} -> {rule.To}").ToList();
        Assert.True(broken.Count == 0, $"forbidden dependencies: {string.Join(", ", broken)}");
    }

    [Fact]
    public void TheNeverListAgreesWithTheMatrix()
    {
        // A rule the matrix itself allows would be a contradiction a reviewer should see at once.
        Assert.DoesNotContain(Never, rule => Allowed[rule.From].Contains(rule.To));
    }
}
