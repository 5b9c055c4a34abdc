/// What an SDK says about itself, each field declared once. Decoding (both decoders), the
/// fill from request headers, the name-length limit, merging an instance's registration and
/// its `applications[]` entry upstream are all derived from `SDKField.all`: a new field is
/// one line there.
public struct SDKField: Sendable, Hashable {
    /// Its place in `all`, and in every `SDKMetadata`.
    public let index: Int
    /// The member name in posts, registrations and `applications[]`.
    public let key: StaticString
    /// The request header that supplies it when the body leaves it out.
    public let header: String?
    /// The server schema's `maxLength` (in UTF-16 code units), where it sets one: a longer
    /// value is a 400 with the server's wording, before `[limits] max_name_length` is checked.
    public let schemaMaxLength: Int?

    public static let all: [SDKField] = [
        // The Python SDK sends its version only in the `unleash-sdk` header.
        ("sdkVersion", "unleash-sdk", nil),
        ("platformName", nil, nil),
        ("platformVersion", nil, nil),
        ("yggdrasilVersion", nil, nil),
        ("specVersion", nil, nil),
        ("connectionId", "unleash-connection-id", nil),
        // An integration on top of the SDK (e.g. an OpenFeature provider), and its version.
        ("sdkFlavor", nil, 256),
        ("sdkFlavorVersion", nil, 32),
    ].enumerated().map { i, f in SDKField(index: i, key: f.0, header: f.1, schemaMaxLength: f.2) }

    public var name: String { key.description }

    /// The field with this member name.
    public static func named(_ name: String) -> SDKField? { all.first { $0.name == name } }

    public static func == (a: SDKField, b: SDKField) -> Bool { a.index == b.index }
    public func hash(into hasher: inout Hasher) { hasher.combine(index) }
}

/// The `SDKField` values of one SDK instance; nil where it said nothing.
public struct SDKMetadata: Sendable, Equatable {
    private var values: [String?] = Array(repeating: nil, count: SDKField.all.count)

    public init() {}

    public subscript(field: SDKField) -> String? {
        get { values[field.index] }
        set { values[field.index] = newValue }
    }

    /// Fills what is missing here from `other`.
    public mutating func fillGaps(from other: SDKMetadata) {
        for f in SDKField.all where values[f.index] == nil { values[f.index] = other.values[f.index] }
    }

    /// Fills what is missing here from the fields' request headers.
    mutating func fillFromHeaders(_ header: (String) -> String?) {
        for f in SDKField.all where values[f.index] == nil {
            if let name = f.header { values[f.index] = header(name) }
        }
    }
}
