// swift-tools-version:6.1
// libFuzzer targets for everything Microscale reads from outside: frames and every wire message,
// the services file and the agent configuration. A package of its own so that the root package's
// `swift build` and `make test` never see it. Built with `swift build --sanitize=fuzzer`, which
// instruments every module (the decoders under test included, not only the harnesses) and links
// libFuzzer's main; `make fuzz` does that. docs/fuzzing.md says what each target covers.
import PackageDescription

let strict: [SwiftSetting] = [.swiftLanguageMode(.v6)]

/// One executable per target; its single file defines `LLVMFuzzerTestOneInput` (no `main`).
func fuzzTarget(_ name: String) -> Target {
    .executableTarget(
        name: name,
        dependencies: ["FuzzSupport"],
        path: "Targets/\(name)",
        swiftSettings: strict + [.unsafeFlags(["-parse-as-library"])])
}

let package = Package(
    name: "microscale-fuzz",
    platforms: [.macOS(.v15)],
    dependencies: [
        .package(name: "microscale", path: ".."),
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-protobuf.git", from: "1.39.0"),
    ],
    targets: [
        // What the receive paths do with a frame or a file, shared by the targets and by
        // `fuzz-seeds`, which writes the seed corpus from the real encoders.
        .target(
            name: "FuzzSupport",
            dependencies: [
                .product(name: "MicroscaleWire", package: "microscale"),
                .product(name: "MicroscaleAgent", package: "microscale"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "SwiftProtobuf", package: "swift-protobuf"),
            ],
            swiftSettings: strict),
        fuzzTarget("fuzz-frame"),
        fuzzTarget("fuzz-membership"),
        fuzzTarget("fuzz-raft"),
        fuzzTarget("fuzz-control"),
        fuzzTarget("fuzz-services"),
        fuzzTarget("fuzz-agent-config"),
    ]
)
