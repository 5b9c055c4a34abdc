/// `{"message": …}`: the Unleash server's shape for body-parser and token errors, which the
/// proxy also uses for its own refusals (413, 415, 431, 405, 404, 503).
public enum ErrorBody {
    public static func message(_ text: String) -> [UInt8] {
        var w = JSONWriter()
        w.beginObject(); w.key("message"); w.string(text); w.endObject()
        return w.bytes
    }
}
