import XCTest
import TestSupport
@testable import MetricsProxyCore

/// The fast path must accept only what the full decoder accepts, and merge it the same way.
final class FastPathTests: XCTestCase {
    let token = "default:development.s"

    func windows(_ body: String) -> (fast: Window?, slow: Window?) {
        var fastWindow: Window?
        var p = FastPost()
        let bytes = Array(body.utf8)
        bytes.withUnsafeBufferPointer { b in
            if FastPostScanner.scan(b, into: &p) {
                var w = Window(opened: 0)
                w.merge(p, body: b, token: token, interval: nil, now: 0) { _ in nil }
                fastWindow = w
            }
        }
        var slowWindow: Window?
        if let post = try? MetricsPostDecoder.decode(bytes) {
            var w = Window(opened: 0)
            w.merge(post, token: token, interval: nil, now: 0)
            slowWindow = w
        }
        return (fastWindow, slowWindow)
    }

    func testSameMergeAsTheFullDecoder() {
        let bodies = [
            #"{"appName":"a","instanceId":"i","sdkVersion":"x:1","bucket":{"start":"2026-11-28T10:00:00.123456789Z","stop":"2026-11-28T10:59:59Z","toggles":{"f":{"yes":3,"no":1,"variants":{"v":2,"w":0}},"g":{"yes":0,"no":0,"variants":{"v":9}},"h":{"no":4}}}}"#,
            #"{"appName":"a","bucket":{"start":1795860000000,"stop":1795863599999,"toggles":{"f":{"yes":1},"f":{"yes":2,"no":5}}},"environment":"x","extra":[1,{"a":null}]}"#,
            #"{"appName":"a","instanceId":"","bucket":{"toggles":{},"stop":"2026-11-28T12:00:00+02:00","start":"2026-11-28T09:00:00Z"}}"#,
            #"{"appName":"a","bucket":{"start":"2026-11-28T10:00:00Z","stop":"2026-11-28T10:00:01Z","toggles":{"f":{"yes":1,"yes":7,"variants":{"a":1,"a":2}}}}}"#,
        ]
        for b in bodies {
            let (fast, slow) = windows(b)
            XCTAssertNotNil(fast, "the fast path takes \(b)")
            XCTAssertEqual(fast?.groups, slow?.groups, b)
            XCTAssertEqual(fast?.keyCount, slow?.keyCount, b)
            XCTAssertEqual(fast?.instances, slow?.instances, b)
        }
    }

    /// A merge changes its own window only: a copy taken between two merges keeps its counts,
    /// in a small table (searched in order) and in one with slots alike. The merge checks the
    /// group's table for sharing once, not per name.
    func testMergeLeavesACopyOfTheWindowAsItWas() {
        for count in [3, 12] {
            let toggles = (0..<count).map { #""f\#($0)":{"yes":1,"no":2,"variants":{"v":1}}"# }.joined(separator: ",")
            let body = Array((#"{"appName":"a","bucket":{"start":0,"stop":0,"toggles":{"# + toggles + "}}}").utf8)
            var p = FastPost()
            var w = Window(opened: 0)
            body.withUnsafeBufferPointer { b in
                XCTAssertTrue(FastPostScanner.scan(b, into: &p))
                w.merge(p, body: b, token: token, interval: nil, now: 0) { _ in nil }
                let copy = w
                w.merge(p, body: b, token: token, interval: nil, now: 0) { _ in nil }
                let key = Window.GroupKey(token: token, appName: "a", hour: 0)
                for f in 0..<count {
                    XCTAssertEqual(copy.groups[key]?.toggles[FeatureName("f\(f)")]?.yes, 1, "\(count) toggles: the copy")
                    XCTAssertEqual(copy.groups[key]?.toggles[FeatureName("f\(f)")]?.variants[FeatureName("v")], 1)
                    XCTAssertEqual(w.groups[key]?.toggles[FeatureName("f\(f)")]?.yes, 2, "\(count) toggles: the window")
                    XCTAssertEqual(w.groups[key]?.toggles[FeatureName("f\(f)")]?.no, 4)
                    XCTAssertEqual(w.groups[key]?.toggles[FeatureName("f\(f)")]?.variants[FeatureName("v")], 2)
                }
            }
        }
    }

    /// Posts into one window with their toggles (and variants) in the window's order, in
    /// other orders, as subsets and with repeats: the merge tries the next entry in the
    /// table's order first and finds the others by hash; the window ends as the full
    /// decoder's does.
    func testPostsInAnyOrderMergeAsTheFullDecoderMergesThem() {
        var rng = SeededRandom("FastPathTests.postsInAnyOrder")
        let names = (0..<24).map { "feature.checkout.flag-\(100 + $0)" } + ["1-short", "2-short", "x"]
        var fast = Window(opened: 0), slow = Window(opened: 0)
        var p = FastPost()
        for post in 0..<60 {
            var chosen = post % 3 == 0 ? names : names.filter { _ in Bool.random(using: &rng) }
            if post % 2 == 1 { chosen.shuffle(using: &rng) }
            if post % 5 == 0, let first = chosen.first { chosen.append(first) }
            let toggles = chosen.map { n -> String in
                let variants = n.hasSuffix("3") ? ["treatment", "control"].shuffled(using: &rng) : ["control"]
                let v = variants.map { #""\#($0)": \#(Int.random(in: 0...3, using: &rng))"# }.joined(separator: ", ")
                return #""\#(n)": {"yes": \#(Int.random(in: 0...9, using: &rng)), "no": \#(Int.random(in: 0...9, using: &rng)), "variants": {\#(v)}}"#
            }.joined(separator: ", ")
            let body = #"{"appName": "a", "instanceId": "i\#(post % 4)", "bucket": {"start": "2026-11-28T10:00:00Z", "stop": "2026-11-28T10:00:30Z", "toggles": {"# + toggles + "}}}"
            let bytes = Array(body.utf8)
            bytes.withUnsafeBufferPointer { b in
                XCTAssertTrue(FastPostScanner.scan(b, into: &p), body)
                fast.merge(p, body: b, token: token, interval: nil, now: 0) { _ in nil }
            }
            slow.merge(try! MetricsPostDecoder.decode(bytes), token: token, interval: nil, now: 0)
        }
        XCTAssertEqual(fast.groups, slow.groups)
        XCTAssertEqual(fast.keyCount, slow.keyCount)
    }

    func testLeavesEverythingUnusualToTheFullDecoder() {
        let bodies = [
            #"{"appName":"a"}"#, #"{"appName":"a","bucket":null}"#, #"{"appName":""}"#, #"{"appName":42,"bucket":{}}"#,
            #"{"appName":"a","bucket":{"start":0,"stop":0,"toggles":{"f":{"yes":1.5}}}}"#,
            #"{"appName":"a","bucket":{"start":0,"stop":0,"toggles":{"f":{"yes":"3"}}}}"#,
            #"{"appName":"a","bucket":{"start":0,"stop":0,"toggles":{"f":{"yes":-1}}}}"#,
            #"{"appName":"a","bucket":{"start":0,"stop":0,"toggles":{"f\u0041":{"yes":1}}}}"#,
            #"{"appName":"a","bucket":{"start":0,"stop":0,"toggles":{"f":{"variants":null}}}}"#,
            #"{"appName":"a","bucket":{"start":"1795860000000","stop":0,"toggles":{}}}"#,
            #"{"appName":"a","bucket":{"start":0,"stop":0,"toggles":{}},"bucket":{"start":0,"stop":0,"toggles":{}}}"#,
            #"{"appName":"a","bucket":{"start":0,"stop":0,"toggles":{"f":{"yes":9007199254740991}}}}"#,
            // Past the schema's maxLength: the full decoder words the 400.
            #"{"appName":"a","sdkFlavorVersion":"123456789012345678901234567890123","bucket":{"start":0,"stop":0,"toggles":{}}}"#,
            #"{"appName":"a","bucket":{"start":0,"stop":0,"toggles":{}}} x"#,
            #"{"appName":"a","bucket":{"start":0,"stop":0,"toggles":{"f":5}}}"#,
        ]
        var p = FastPost()
        for b in bodies {
            let accepted = Array(b.utf8).withUnsafeBufferPointer { FastPostScanner.scan($0, into: &p) }
            XCTAssertFalse(accepted, b)
        }
    }

    /// The name reader finds the closing quote a word at a time (or byte by byte near the
    /// end of the body) and refuses escapes, control characters and bytes above 0x7F,
    /// wherever they fall.
    func testNameReaderStopsAtTheQuoteAndAtEverySpecialByte() {
        for length in 0...40 {
            let name = (0..<length).map { UInt8(ascii: "a") + UInt8($0 % 26) }
            for trailing in 0...9 {
                let buffer = [UInt8(ascii: "\"")] + name + [UInt8(ascii: "\"")] + Array(repeating: UInt8(ascii: "}"), count: trailing)
                buffer.withUnsafeBufferPointer { b in
                    var r = PostReader(base: b.baseAddress!, count: b.count, at: 1)
                    let read = r.name()
                    XCTAssertEqual(read, 1..<(1 + length), "length \(length), \(trailing) after")
                    XCTAssertEqual(r.i, length + 2)
                }
                for position in 0..<length {
                    for special: UInt8 in [UInt8(ascii: "\\"), 0x1F, 0x0A, 0x80, 0xC3, 0xFF] {
                        var bad = buffer
                        bad[1 + position] = special
                        bad.withUnsafeBufferPointer { b in
                            var r = PostReader(base: b.baseAddress!, count: b.count, at: 1)
                            XCTAssertNil(r.name(), "byte \(special) at \(position) of \(length)")
                        }
                    }
                }
            }
            // No closing quote at all.
            ([UInt8(ascii: "\"")] + name).withUnsafeBufferPointer { b in
                var r = PostReader(base: b.baseAddress!, count: b.count, at: 1)
                XCTAssertNil(r.name())
            }
        }
    }

    /// `NameHash.of` reads a name's last partial word with one load that ends with the name;
    /// it must equal the definition (whole words, then the rest byte by byte, little-endian)
    /// for every length and wherever the name sits in memory.
    func testNameHashReadsTheLastWordAsTheDefinitionDoes() {
        func definition(_ bytes: [UInt8]) -> UInt64 {
            var h = NameHash.seed, i = 0
            while bytes.count - i >= 8 {
                h = NameHash.fold(h, (0..<8).reduce(UInt64(0)) { $0 | UInt64(bytes[i + $1]) << (8 * UInt64($1)) })
                i += 8
            }
            let last = (i..<bytes.count).reduce(UInt64(0)) { $0 | UInt64(bytes[$1]) << (8 * UInt64($1 - i)) }
            return NameHash.finish(NameHash.fold(h, last), length: bytes.count)
        }
        for length in 0...40 {
            let name = (0..<length).map { UInt8(truncatingIfNeeded: 0x61 + $0 * 7) }
            for offset in 0..<8 {
                let padded = Array(repeating: UInt8(0xEE), count: offset) + name + [0xEE]
                let hashed = padded.withUnsafeBufferPointer { NameHash.of(UnsafeBufferPointer(rebasing: $0[offset..<offset + length])) }
                XCTAssertEqual(hashed, definition(name), "length \(length) at offset \(offset)")
            }
        }
        XCTAssertNotEqual(Array("ab".utf8).withUnsafeBufferPointer { NameHash.of($0) },
                          Array("ab\0".utf8).withUnsafeBufferPointer { NameHash.of($0) }, "the length is part of the hash")
    }

    /// Counts are read a word at a time when eight bytes are left; the result must be what
    /// JSON says, or nil for anything the full decoder should judge.
    func testCountReaderReadsEveryPlainCountAndNothingElse() {
        func read(_ text: String) -> (Int64?, Int) {
            let bytes = Array(text.utf8)
            return bytes.withUnsafeBufferPointer { b in
                var r = PostReader(base: b.baseAddress!, count: b.count, at: 0)
                let v = r.count()
                return (v, r.i)
            }
        }
        for after in ["", "}", ",", " ", "}}}}}}}}}}", ", \"no\": 1}"] {
            for v in [0, 1, 9, 10, 42, 99, 100, 1234, 99_999, 1_000_000, 9_999_999, 10_000_000, 12_345_678,
                      123_456_789_012_345, 999_999_999_999_999] as [Int64] {
                let (read, end) = read("\(v)\(after)")
                XCTAssertEqual(read, v, "\(v)\(after)")
                XCTAssertEqual(end, "\(v)".utf8.count, "\(v)\(after)")
            }
            for bad in ["", "-1", "01", "00", "1.5", "1e3", "1E3", "0.0", "1234567890123456", "x", "+1", "07654321"] {
                XCTAssertNil(read("\(bad)\(after)").0, "\(bad)\(after)")
            }
        }
        for v in 0..<20_000 as Range<Int64> {
            XCTAssertEqual(read("\(v),\"variants\":{}}").0, v)
        }
    }

    /// The separators the shaped reader compares as words are the bytes they stand for.
    func testShapedSeparatorsAreTheirBytes() {
        func word(_ text: String) -> UInt64 {
            Array(text.utf8).enumerated().reduce(0) { $0 | UInt64($1.element) << (8 * UInt64($1.offset)) }
        }
        XCTAssertEqual(PostReader.spacedYes, word(#": {"yes""#))
        XCTAssertEqual(PostReader.spacedColon, word(": "))
        XCTAssertEqual(PostReader.compactYes, word(#":{"yes":"#))
        XCTAssertEqual(PostReader.spacedNo, word(#", "no": "#))
        XCTAssertEqual(PostReader.compactNo, word(#","no":"#))
        XCTAssertEqual(PostReader.spacedVariants0, word(#", "varia"#))
        XCTAssertEqual(PostReader.spacedVariants1, word(#"ants": {"#))
        XCTAssertEqual(PostReader.compactVariants0, word(#","varian"#))
        XCTAssertEqual(PostReader.compactVariants1, word(#"iants":{"#))
    }

    /// What SDKs write is read by the word-matching reader; every other spelling is left to
    /// the key-by-key reader (the shaped one answers false and leaves no variants behind).
    func testShapedReaderTakesWhatSDKsWriteAndNothingElse() {
        func shaped(_ rest: String) -> (FastPost.Toggle, [String: Int64])? {
            let bytes = Array(("\"f\"" + rest + ", \"next\": {}}").utf8)
            return bytes.withUnsafeBufferPointer { b in
                var p = FastPost()
                var r = PostReader(base: b.baseAddress!, count: b.count, at: 3)
                var t = FastPost.Toggle(name: 1..<2, yes: 0, no: 0, variants: 0..<0)
                guard r.shaped(&t, into: &p) else { return nil }
                XCTAssertEqual(b[r.i], UInt8(ascii: ","), "stops after the toggle's '}' in \(rest)")
                var variants: [String: Int64] = [:]
                for v in p.variants[t.variants] { variants[String(decoding: b[v.name], as: UTF8.self)] = v.count }
                return (t, variants)
            }
        }
        let taken: [(String, Int64, Int64, [String: Int64])] = [
            (#": {"yes": 20, "no": 33, "variants": {"control": 10, "treatment-blue": 10}}"#, 20, 33, ["control": 10, "treatment-blue": 10]),
            (#": {"yes": 9, "no": 0, "variants": {}}"#, 9, 0, [:]),
            (#": {"yes": 0, "no": 12345678}"#, 0, 12_345_678, [:]),
            (#":{"yes":1,"no":2,"variants":{"a":3,"b":0}}"#, 1, 2, ["a": 3, "b": 0]),
            (#":{"yes":1,"no":2,"variants":{}}"#, 1, 2, [:]),
            (#":{"yes":999999999999999,"no":2}"#, 999_999_999_999_999, 2, [:]),
        ]
        for (rest, yes, no, variants) in taken {
            let read = shaped(rest)
            XCTAssertEqual(read?.0.yes, yes, rest)
            XCTAssertEqual(read?.0.no, no, rest)
            XCTAssertEqual(read?.1, variants, rest)
        }
        let declined = [
            #": {"no": 1, "yes": 2}"#, #": { "yes": 1, "no": 2}"#, #": {"yes" : 1, "no": 2}"#, #":{"yes": 1,"no":2}"#,
            #": {"yes": 1, "no": 2, "variants": {"a":1}}"#, #": {"yes": 1, "no": 2, "variants": {"a": 1,"b": 2}}"#,
            #": {"yes": 1, "no": 2, "variants": {"a": 1}, "x": 1}"#, #": {"yes": 1, "no": 2, "x": 1}"#,
            #": {"yes": 1}"#, #": {"yes": -1, "no": 2}"#, #": {"yes": 1.0, "no": 2}"#, #": {"yes": 01, "no": 2}"#,
            #": {"yes": 1, "no": 2, "variants": {"a": 1e2}}"#, #": {"yes": 1, "no": 2, "variants": {"a\u0041": 1}}"#,
            #": {"yes": 1, "no": 2, "variants": null}"#, #":{"yes":1,"no":2,"variants":{"a":1, "b":2}}"#,
            #": {"yes": 1, "no": 2 }"#, #": {}"#, #": 5"#,
        ]
        for rest in declined { XCTAssertNil(shaped(rest), rest) }
    }

    /// Each cut, deleted byte or changed byte of posts in both spellings: whatever the fast
    /// path accepts, the full decoder accepts and merges the same way.
    /// One post, toggles in several spellings: the shaped run stops at a toggle written
    /// otherwise (read key by key, the variants it had taken given back) and at any other
    /// separator, and the next toggle starts a new run. Each post is read by the fast path
    /// and merges as the full decoder reads it.
    func testShapedRunsResumeAfterOtherSpellingsAndSeparators() {
        let head = #"{"appName": "a", "bucket": {"start": "2026-11-28T10:00:00Z", "stop": "2026-11-28T10:00:30Z", "toggles": {"#
        let toggles = [
            // Key order changed in the middle toggle.
            #""f": {"yes": 1, "no": 2, "variants": {"v": 1}}, "g": {"variants": {"v": 5}, "no": 1, "yes": 3}, "h": {"yes": 4, "no": 0, "variants": {"v": 2, "w": 2}}"#,
            // A variant taken, then a compact separator in a spaced toggle: given back, read again.
            #""f": {"yes": 1, "no": 2, "variants": {"v": 1,"w": 2}}, "g": {"yes": 3, "no": 0, "variants": {"v": 5}}"#,
            // Other separators between toggles and before the closing brace.
            #""f": {"yes": 1, "no": 2},\#n  "g": {"yes": 3, "no": 0} ,"h":{"yes":1,"no":1}, \#t"i": {"yes": 9, "no": 9} "#,
            // Compact and spaced toggles in one post; an empty object; a repeated name.
            #""f":{"yes":1,"no":2,"variants":{"v":1}},"g": {"yes": 3, "no": 4},"h":{},"f":{"yes":5,"no":6,"variants":{"w":7}}"#,
        ]
        for t in toggles {
            let body = head + t + "}}}"
            let (fast, slow) = windows(body)
            XCTAssertNotNil(fast, "the fast path takes \(body)")
            XCTAssertNotNil(slow, body)
            XCTAssertEqual(fast?.groups, slow?.groups, body)
            XCTAssertEqual(fast?.keyCount, slow?.keyCount, body)
        }
    }

    func testShapedPostsAgreeWithTheFullDecoderUnderEveryByteChange() {
        let spaced = #"{"appName": "a", "bucket": {"start": "2026-11-28T10:00:00Z", "stop": "2026-11-28T10:00:30Z", "toggles": {"f": {"yes": 2, "no": 13, "variants": {"v": 1, "w": 10}}, "g": {"yes": 0, "no": 4, "variants": {}}, "h": {"yes": 7, "no": 0}}}}"#
        let compact = #"{"appName":"a","bucket":{"start":"2026-11-28T10:00:00Z","stop":"2026-11-28T10:00:30Z","toggles":{"f":{"yes":2,"no":13,"variants":{"v":1,"w":10}},"g":{"yes":0,"no":4,"variants":{}},"h":{"yes":7,"no":0}}}}"#
        var checked = 0
        for body in [spaced, compact] {
            let original = Array(body.utf8)
            let (fast, slow) = windows(body)
            XCTAssertNotNil(fast)
            XCTAssertEqual(fast?.groups, slow?.groups)
            let from = original.count - (body.count - body.distance(from: body.startIndex, to: body.range(of: "toggles")!.lowerBound))
            var variants: [[UInt8]] = []
            for k in from..<original.count {
                var cut = original; cut.removeSubrange(k...)
                var deleted = original; deleted.remove(at: k)
                variants += [cut, deleted]
                for b in Array(" ,:{}\"0a9-.".utf8) where b != original[k] {
                    var changed = original; changed[k] = b
                    variants.append(changed)
                }
            }
            for v in variants {
                let text = String(decoding: v, as: UTF8.self)
                let (fast, slow) = windows(text)
                guard let fast else { continue }
                checked += 1
                XCTAssertEqual(fast.groups, slow?.groups, text)
                XCTAssertEqual(fast.keyCount, slow?.keyCount, text)
            }
        }
        XCTAssertGreaterThan(checked, 100, "some changed posts are still ones the fast path takes")
    }

    /// Past the scanner's initial room (256 toggles and 256 variants) its lists grow; a
    /// large post must still merge exactly as the full decoder reads it.
    func testLargePostGrowsTheScratchListsAndMergesTheSame() {
        var toggles: [String] = []
        for i in 0..<1000 {
            let variants = (0..<(i % 4)).map { "\"v\($0)\": \($0 + i % 7)" }.joined(separator: ", ")
            toggles.append("\"flag-\(i)\": {\"yes\": \(i % 13), \"no\": \(i % 5), \"variants\": {\(variants)}}")
        }
        let body = #"{"appName":"big","instanceId":"i","bucket":{"start":"2026-11-28T10:00:00Z","stop":"2026-11-28T10:00:30Z","toggles":{"#
            + toggles.joined(separator: ", ") + "}}}"
        let (fast, slow) = windows(body)
        XCTAssertNotNil(fast, "the fast path takes a large post")
        XCTAssertEqual(fast?.groups, slow?.groups)
        XCTAssertEqual(fast?.keyCount, slow?.keyCount)
        XCTAssertEqual(slow?.groups.first?.value.toggles.count, 1000 - (999 / 65 + 1), "toggles with yes = no = 0 (every 65th, from 0) are dropped")
    }
}
