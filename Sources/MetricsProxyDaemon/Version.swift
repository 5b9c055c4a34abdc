/// The proxy's version, shown by `--version` and sent upstream in `User-Agent`.
public enum Version {
    public static let string = "0.1.0"
}
