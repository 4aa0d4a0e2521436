import FuzzSupport

// The payload of a raft frame: RaftCodec, and the entries and snapshot it carries.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ start: UnsafeRawPointer?, _ count: Int) -> CInt {
    Receive.raft(FuzzInput.frame(.raft, start, count))
    return 0
}

@_cdecl("LLVMFuzzerInitialize")
public func initialize(_ argc: UnsafeMutablePointer<CInt>, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>) -> CInt
{
    Seeds.writeIfAsked(Seeds.raft)
    return 0
}
