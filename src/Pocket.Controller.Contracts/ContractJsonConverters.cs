using System.Text.Json;
using System.Text.Json.Serialization;
using Pocket.Protocol;

namespace Pocket.Controller.Contracts;

// The wire writes tiers, node states and tokens as text. These converters sit on the contract records' properties,
// so the controller (ASP.NET Core's options), PocketControllerClient (its source-generated context) and any caller's
// own options all read and write the same JSON.

/// <summary>A tier as its name: "dram", "ssd", "hdd".</summary>
internal sealed class TierJsonConverter : JsonConverter<NodeTier>
{
    public override NodeTier Read(ref Utf8JsonReader reader, Type typeToConvert, JsonSerializerOptions options) =>
        Parse(reader.GetString());

    public override void Write(Utf8JsonWriter writer, NodeTier value, JsonSerializerOptions options) =>
        writer.WriteStringValue(NodeTierNames.Name(value));

    public override NodeTier ReadAsPropertyName(ref Utf8JsonReader reader, Type typeToConvert, JsonSerializerOptions options) =>
        Parse(reader.GetString());

    public override void WriteAsPropertyName(Utf8JsonWriter writer, NodeTier value, JsonSerializerOptions options) =>
        writer.WritePropertyName(NodeTierNames.Name(value));

    internal static NodeTier Parse(string? text) =>
        NodeTierNames.TryParse(text, out var tier) ? tier : throw new JsonException(NodeTierNames.Unknown(text));
}

/// <summary>A node state in lower case: "live", "draining", "drained", "standby", "dead".</summary>
internal sealed class NodeStateJsonConverter : JsonConverter<NodeState>
{
    public override NodeState Read(ref Utf8JsonReader reader, Type typeToConvert, JsonSerializerOptions options)
    {
        var text = reader.GetString();
        return Enum.TryParse<NodeState>(text, ignoreCase: true, out var state) && Enum.IsDefined(state) && !char.IsAsciiDigit(text![0])
            ? state
            : throw new JsonException($"an unknown node state '{text}'");
    }

    public override void Write(Utf8JsonWriter writer, NodeState value, JsonSerializerOptions options) =>
        writer.WriteStringValue(value.ToString().ToLowerInvariant());
}

/// <summary>A job token as 32 hex digits.</summary>
internal sealed class JobTokenJsonConverter : JsonConverter<JobToken>
{
    public override JobToken Read(ref Utf8JsonReader reader, Type typeToConvert, JsonSerializerOptions options) =>
        JobToken.TryParse(reader.GetString(), out var token) ? token : throw new JsonException("a job token that is not 32 hex digits");

    public override void Write(Utf8JsonWriter writer, JobToken value, JsonSerializerOptions options) =>
        writer.WriteStringValue(value.ToString());
}

/// <summary>A map from tier to a number, keyed by the tiers' names in tier order: {"dram":1,"ssd":2}.</summary>
internal sealed class TierDictionaryJsonConverter<TValue> : JsonConverter<IReadOnlyDictionary<NodeTier, TValue>>
{
    public override IReadOnlyDictionary<NodeTier, TValue> Read(ref Utf8JsonReader reader, Type typeToConvert, JsonSerializerOptions options)
    {
        if (reader.TokenType != JsonTokenType.StartObject)
        {
            throw new JsonException("a map of tiers must be a JSON object");
        }

        var values = new Dictionary<NodeTier, TValue>();
        var valueType = (System.Text.Json.Serialization.Metadata.JsonTypeInfo<TValue>)options.GetTypeInfo(typeof(TValue));
        while (reader.Read() && reader.TokenType != JsonTokenType.EndObject)
        {
            var tier = TierJsonConverter.Parse(reader.GetString());
            reader.Read();
            values[tier] = JsonSerializer.Deserialize(ref reader, valueType)!;
        }

        return values;
    }

    public override void Write(Utf8JsonWriter writer, IReadOnlyDictionary<NodeTier, TValue> value, JsonSerializerOptions options)
    {
        var valueType = (System.Text.Json.Serialization.Metadata.JsonTypeInfo<TValue>)options.GetTypeInfo(typeof(TValue));
        writer.WriteStartObject();
        foreach (var (tier, number) in value.OrderBy(t => t.Key))
        {
            writer.WritePropertyName(NodeTierNames.Name(tier));
            JsonSerializer.Serialize(writer, number, valueType);
        }

        writer.WriteEndObject();
    }
}
