import FuzzSupport

// A services file (YAML or JSON), as `microscale services apply` and PUT /v1/services read it.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ start: UnsafeRawPointer?, _ count: Int) -> CInt {
    Receive.services(FuzzInput.text(start, count))
    return 0
}

@_cdecl("LLVMFuzzerInitialize")
public func initialize(_ argc: UnsafeMutablePointer<CInt>, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>) -> CInt
{
    Seeds.writeIfAsked(Seeds.services)
    return 0
}
