import XCTest
@testable import MetricsProxyCore

final class FeatureTableTests: XCTestCase {
    func update(_ t: inout FeatureTable<Int>, _ name: String, _ add: Int) -> Bool {
        var n = name
        return n.withUTF8 { b in t.update(b, hash: NameHash.of(b), initial: { 0 }) { $0 += add } }
    }

    func testAgreesWithADictionaryThroughGrowthAndCollisions() {
        var table = FeatureTable<Int>()
        var reference: [String: Int] = [:]
        var rng = SystemRandomNumberGenerator()
        // Names that differ only in a few bits of one byte, the empty name,
        // long names, and repeats.
        let names = (0..<3000).map { i -> String in
            switch i % 4 {
            case 0: return "flag-\(i)"
            case 1: return String(UnicodeScalar(UInt8(0x41 + i % 26))) + "-" + String(UnicodeScalar(UInt8(0x61 + (i / 26) % 26)))
            case 2: return String(repeating: "x", count: i % 300)
            default: return "é🙂\(i % 50)"
            }
        }
        for _ in 0..<20_000 {
            let name = names[Int.random(in: 0..<names.count, using: &rng)]
            let add = Int.random(in: 1...9, using: &rng)
            let added = update(&table, name, add)
            XCTAssertEqual(added, reference[name] == nil, name)
            reference[name, default: 0] += add
        }
        XCTAssertEqual(table.count, reference.count)
        var seen: [String: Int] = [:]
        for (k, v) in table { seen[k.text] = v }
        XCTAssertEqual(seen, reference)
        for (k, v) in reference {
            XCTAssertEqual(table[FeatureName(k)], v)
            var b = k
            b.withUTF8 { bytes in
                XCTAssertTrue(table.contains(bytes, hash: NameHash.of(bytes)))
                XCTAssertEqual(table[FeatureName(borrowing: bytes, hash: NameHash.of(bytes))], v, "a borrowed key finds it")
            }
        }
        XCTAssertNil(table["absent"])
    }

    /// The merge's lookup: the entry at a hint first (by length and bytes), else by hash.
    /// Runs of names in the table's order, random jumps, names of equal length that differ
    /// only at the start or only at the end, the empty name; small tables and ones with
    /// slots. Counts agree with a dictionary, the hint ends past the name's entry (entries
    /// keep the order names were added), and the hashed lookup finds every name added.
    func testHintedUpdatesAgreeWithADictionary() {
        for size in [5, 300] {
            var table = FeatureTable<Int>()
            var reference: [String: Int] = [:]
            var order: [String] = []
            var rng = SystemRandomNumberGenerator()
            let names = (0..<size).map { i -> String in
                switch i % 4 {
                case 0: return "feature.checkout.flag-\(1000 + i)"
                case 1: return "\(1000 + i)-feature.checkout.flag"
                case 2: return String(repeating: "x", count: i % 40)
                default: return "é🙂\(i)"
                }
            }
            var hint = 0
            for step in 0..<4000 {
                // Mostly the name at the hint (a post in the table's order), else any name.
                let name = step % 5 != 0 && hint < order.count ? order[hint] : names.randomElement(using: &rng)!
                if step % 50 == 0 { hint = Int.random(in: 0...(order.count + 1), using: &rng) }
                var bytes = name
                let added = bytes.withUTF8 { b in table.updateOwned(b, hint: &hint, initial: { 0 }) { $0 += 1 } }
                XCTAssertEqual(added, reference[name] == nil, name)
                if reference[name] == nil { order.append(name) }
                reference[name, default: 0] += 1
                XCTAssertEqual(hint, order.firstIndex(of: name)! + 1, "the hint ends past \(name)'s entry")
            }
            XCTAssertEqual(table.count, reference.count)
            for (k, v) in reference { XCTAssertEqual(table[FeatureName(k)], v, k) }
        }
    }

    func testEqualityIgnoresOrder() {
        var a = FeatureTable<Int>(), b = FeatureTable<Int>()
        for n in ["x", "y", "z"] { _ = update(&a, n, 1) }
        for n in ["z", "x", "y"] { _ = update(&b, n, 1) }
        XCTAssertEqual(a, b)
        _ = update(&b, "x", 1)
        XCTAssertNotEqual(a, b)
        b["x"] = 1
        XCTAssertEqual(a, b)
    }
    /// A table is a value: a copy changed (a count, a new name, growth past the small size)
    /// leaves the original as it was, and the other way round.
    func testCopiesAreIndependent() {
        var a = FeatureTable<Int>()
        for i in 0..<5 { _ = update(&a, "flag-\(i)", i) }
        var b = a
        _ = update(&b, "flag-0", 100)
        _ = update(&b, "new", 1)
        XCTAssertEqual(a["flag-0"], 0)
        XCTAssertNil(a["new"])
        XCTAssertEqual(b["flag-0"], 100)
        for i in 0..<40 { _ = update(&b, "grown-\(i)", 1) }
        XCTAssertEqual(a.count, 5)
        XCTAssertEqual(b.count, 46)
        var c = b
        _ = update(&b, "grown-3", 5)
        XCTAssertEqual(c["grown-3"], 1)
        XCTAssertEqual(b["grown-3"], 6)
        _ = update(&c, "grown-39", 2)
        XCTAssertEqual(b["grown-39"], 1)
        XCTAssertEqual(c["grown-39"], 3)
        var nested = FeatureTable<FeatureTable<Int>>()
        var n = "outer"
        n.withUTF8 { bytes in _ = nested.update(bytes, hash: NameHash.of(bytes), initial: { a }) { _ = self.update(&$0, "flag-1", 10) } }
        XCTAssertEqual(a["flag-1"], 1, "the copy stored in another table changed, not the original")
        XCTAssertEqual(nested["outer"]?["flag-1"], 11)
    }
    /// Names are compared a word at a time (overlapping words at the ends): a difference in
    /// any byte of any length is seen.
    func testSameBytesSeesADifferenceAtEveryPosition() {
        for length in 0...40 {
            let a = (0..<length).map { UInt8(truncatingIfNeeded: 0x61 + $0 * 7) }
            a.withUnsafeBufferPointer { pa in
                let copy = Array(a)
                copy.withUnsafeBufferPointer { XCTAssertTrue(sameBytes(pa.baseAddress ?? UnsafePointer(bitPattern: 8)!, $0.baseAddress ?? UnsafePointer(bitPattern: 8)!, length)) }
                for position in 0..<length {
                    var b = a
                    b[position] ^= 0x01
                    b.withUnsafeBufferPointer { XCTAssertFalse(sameBytes(pa.baseAddress!, $0.baseAddress!, length), "length \(length), byte \(position)") }
                }
            }
        }
    }
}
