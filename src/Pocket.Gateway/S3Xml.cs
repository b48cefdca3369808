using System.Globalization;
using System.Text;
using System.Xml;
using System.Xml.Linq;

namespace Pocket.Gateway;

/// <summary>S3's XML documents: written into memory (they are small: at most a listing page) and parsed safely.</summary>
internal static class S3Xml
{
    public const string Namespace = "http://s3.amazonaws.com/doc/2006-03-01/";

    private static readonly XmlWriterSettings WriterSettings = new() { Encoding = new UTF8Encoding(false), Indent = false };

    private static readonly XmlReaderSettings ReaderSettings = new() { DtdProcessing = DtdProcessing.Prohibit, XmlResolver = null, IgnoreComments = true };

    /// <summary>A document whose root element is in S3's namespace.</summary>
    public static byte[] Document(string root, Action<XmlWriter> body, bool withNamespace = true)
    {
        using var stream = new MemoryStream();
        using (var writer = XmlWriter.Create(stream, WriterSettings))
        {
            writer.WriteStartDocument();
            if (withNamespace)
            {
                writer.WriteStartElement(root, Namespace);
            }
            else
            {
                writer.WriteStartElement(root);
            }

            body(writer);
            writer.WriteEndElement();
            writer.WriteEndDocument();
        }

        return stream.ToArray();
    }

    public static void Element(this XmlWriter writer, string name, string? value)
    {
        if (value is not null)
        {
            writer.WriteElementString(name, value);
        }
    }

    public static void Element(this XmlWriter writer, string name, long value) =>
        writer.WriteElementString(name, value.ToString(CultureInfo.InvariantCulture));

    public static void Element(this XmlWriter writer, string name, bool value) =>
        writer.WriteElementString(name, value ? "true" : "false");

    /// <summary>S3's XML time format, e.g. 2009-10-12T17:50:30.000Z.</summary>
    public static string Time(DateTimeOffset time) => time.UtcDateTime.ToString("yyyy-MM-dd'T'HH:mm:ss.fff'Z'", CultureInfo.InvariantCulture);

    /// <summary>HTTP date of Last-Modified, e.g. Wed, 12 Oct 2009 17:50:00 GMT.</summary>
    public static string HttpTime(DateTimeOffset time) => time.UtcDateTime.ToString("r", CultureInfo.InvariantCulture);

    public static byte[] Error(S3Exception error, string resource, string requestId) => Document("Error", writer =>
    {
        writer.Element("Code", error.Error.Code);
        writer.Element("Message", error.Message);
        foreach (var (name, value) in error.Details)
        {
            writer.Element(name, value);
        }

        writer.Element("Resource", resource);
        writer.Element("RequestId", requestId);
    }, withNamespace: false);

    /// <summary>Parses a request body; elements are matched by local name, with or without S3's namespace.</summary>
    public static XElement Parse(byte[] body, string expectedRoot)
    {
        try
        {
            using var reader = XmlReader.Create(new MemoryStream(body), ReaderSettings);
            var root = XDocument.Load(reader).Root;
            return root is not null && root.Name.LocalName == expectedRoot
                ? root
                : throw new S3Exception(S3Error.MalformedXml, $"The XML you provided was not well-formed or did not validate against our published schema: the root element must be {expectedRoot}.");
        }
        catch (XmlException ex)
        {
            throw new S3Exception(S3Error.MalformedXml, $"The XML you provided was not well-formed: {ex.Message}", ex);
        }
    }

    public static IEnumerable<XElement> Children(this XElement element, string localName) =>
        element.Elements().Where(e => e.Name.LocalName == localName);

    public static string? ChildValue(this XElement element, string localName) =>
        element.Children(localName).FirstOrDefault()?.Value;
}
