// libFuzzer entry point for FuzzTargets.journal; built with the core's sources and Tests/MetricsProxyCoreTests/FuzzTargets.swift by Tests/Fuzz/run.sh.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    FuzzTargets.journal(UnsafeBufferPointer(start: data, count: size))
    return 0
}
