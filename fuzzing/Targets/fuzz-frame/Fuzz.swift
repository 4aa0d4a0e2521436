import FuzzSupport

// A byte stream from a peer: the frame decoder, then every frame to where the agent sends it.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ start: UnsafeRawPointer?, _ count: Int) -> CInt {
    Receive.stream(FuzzInput.bytes(start, count))
    return 0
}

@_cdecl("LLVMFuzzerInitialize")
public func initialize(_ argc: UnsafeMutablePointer<CInt>, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>) -> CInt
{
    Seeds.writeIfAsked(Seeds.frame)
    return 0
}
