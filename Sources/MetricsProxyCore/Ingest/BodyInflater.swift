import CZlib

/// Inflates gzip and deflate request bodies without ever holding more than `limit` bytes,
/// so a small bomb cannot blow up in memory.
public enum BodyInflater {
    public enum Failure: Error, Equatable {
        case tooLarge
        case corrupt(String)
    }

    /// `gzip` takes a gzip stream; `deflate` a zlib stream (or raw deflate, as browsers send).
    public static func inflate(_ input: UnsafeBufferPointer<UInt8>, gzip: Bool, limit: Int) throws(Failure) -> [UInt8] {
        do {
            return try run(input, windowBits: gzip ? 15 + 16 : 15, limit: limit)
        } catch .corrupt(let why) where !gzip {
            // Some clients send raw deflate under `deflate`.
            do { return try run(input, windowBits: -15, limit: limit) } catch { throw .corrupt(why) }
        }
    }

    private static func run(_ input: UnsafeBufferPointer<UInt8>, windowBits: Int32, limit: Int) throws(Failure) -> [UInt8] {
        var stream = z_stream()
        guard mp_inflate_init2(&stream, windowBits) == Z_OK else { throw .corrupt("inflate init failed") }
        defer { inflateEnd(&stream) }
        var out = [UInt8](repeating: 0, count: min(limit + 1, max(4096, input.count * 4)))
        var produced = 0
        stream.next_in = UnsafeMutablePointer(mutating: input.baseAddress)
        stream.avail_in = UInt32(input.count)
        while true {
            if produced == out.count {
                guard out.count <= limit else { throw .tooLarge }
                out += [UInt8](repeating: 0, count: min(out.count, limit + 1 - out.count))
            }
            let status: Int32 = out.withUnsafeMutableBufferPointer { p in
                stream.next_out = p.baseAddress! + produced
                stream.avail_out = UInt32(p.count - produced)
                let r = CZlib.inflate(&stream, Z_NO_FLUSH)
                produced = p.count - Int(stream.avail_out)
                return r
            }
            if produced > limit { throw .tooLarge }
            switch status {
            case Z_STREAM_END:
                out.removeSubrange(produced...)
                return out
            case Z_OK:
                continue
            case Z_BUF_ERROR where stream.avail_in == 0:
                throw .corrupt("unexpected end of compressed body")
            case Z_BUF_ERROR:
                continue
            default:
                let msg = stream.msg.map { String(cString: $0) } ?? "error \(status)"
                throw .corrupt(msg)
            }
        }
    }

    /// Compresses with a gzip wrapper (for `upstream.gzip`).
    public static func gzip(_ input: [UInt8]) -> [UInt8] {
        var stream = z_stream()
        precondition(mp_deflate_init2(&stream, 6, 15 + 16) == Z_OK, "deflateInit2 failed")
        defer { deflateEnd(&stream) }
        var out = [UInt8](repeating: 0, count: Int(deflateBound(&stream, UInt(input.count))) + 32)
        input.withUnsafeBufferPointer { inp in
            out.withUnsafeMutableBufferPointer { p in
                stream.next_in = UnsafeMutablePointer(mutating: inp.baseAddress)
                stream.avail_in = UInt32(inp.count)
                stream.next_out = p.baseAddress
                stream.avail_out = UInt32(p.count)
                let r = deflate(&stream, Z_FINISH)
                precondition(r == Z_STREAM_END, "deflate with a bound-sized buffer must finish")
            }
        }
        out.removeSubrange(Int(stream.total_out)...)
        return out
    }
}
