import Foundation
import XCTest

/// Randomness for tests that can be replayed: every generator draws from one seed per test
/// run (`METRICS_PROXY_TEST_SEED`, or a random one), mixed with the generator's own label so
/// that generators made on several threads stay independent of their order. When any test
/// fails, the seed is printed with the variable that replays it.
public struct SeededRandom: RandomNumberGenerator, Sendable {
    /// The run's seed: from the environment, else drawn once.
    public static let runSeed: UInt64 = {
        let seed = ProcessInfo.processInfo.environment["METRICS_PROXY_TEST_SEED"].flatMap { UInt64($0) }
            ?? UInt64.random(in: 0...UInt64.max)
        SeedReporter.register(seed)
        return seed
    }()

    private var state: UInt64

    /// A generator for `label` (e.g. the test and poster it serves).
    public init(_ label: String) {
        var h: UInt64 = 0xcbf2_9ce4_8422_2325 // FNV-1a of the label, then the run's seed
        for b in label.utf8 { h = (h ^ UInt64(b)) &* 0x100_0000_01b3 }
        state = h ^ Self.runSeed
    }

    /// SplitMix64: small, fast and good enough for test data.
    public mutating func next() -> UInt64 {
        state &+= 0x9e37_79b9_7f4a_7c15
        var z = state
        z = (z ^ (z >> 30)) &* 0xbf58_476d_1ce4_e5b9
        z = (z ^ (z >> 27)) &* 0x94d0_49bb_1331_11eb
        return z ^ (z >> 31)
    }
}

/// Prints the run's seed under each failing test that drew from it.
private final class SeedReporter: NSObject, XCTestObservation, @unchecked Sendable {
    let seed: UInt64

    init(seed: UInt64) { self.seed = seed }

    static func register(_ seed: UInt64) {
        XCTestObservationCenter.shared.addTestObserver(SeedReporter(seed: seed))
    }

    func testCase(_ testCase: XCTestCase, didFailWithDescription description: String, inFile filePath: String?, atLine lineNumber: Int) {
        print("\(testCase.name): random test data from seed \(seed); replay with METRICS_PROXY_TEST_SEED=\(seed)")
    }
}
