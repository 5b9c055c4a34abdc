// libFuzzer entry point for FuzzTargets.spool; built with the core's sources and Tests/MetricsProxyCoreTests/FuzzTargets.swift by Tests/Fuzz/run.sh.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    FuzzTargets.spool(UnsafeBufferPointer(start: data, count: size))
    return 0
}
