import FuzzSupport

// The payload of a control frame: assignments, subscriptions and forwarded API requests.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ start: UnsafeRawPointer?, _ count: Int) -> CInt {
    Receive.control(FuzzInput.frame(.control, start, count))
    return 0
}

@_cdecl("LLVMFuzzerInitialize")
public func initialize(_ argc: UnsafeMutablePointer<CInt>, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>) -> CInt
{
    Seeds.writeIfAsked(Seeds.control)
    return 0
}
