// swift-tools-version:6.1
// Microscale: one agent per host, gossip over mutual TLS, Raft among the servers,
// a microscaling planner on the leader, Docker on every host. Module map: docs/ARCHITECTURE.md.
import PackageDescription

let strict: [SwiftSetting] = [.swiftLanguageMode(.v6)]

let package = Package(
    name: "microscale",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "microscale", targets: ["microscale"]),
        .executable(name: "microscale-sim", targets: ["microscale-sim"]),
        .executable(name: "microscale-bench", targets: ["microscale-bench"]),
        .executable(name: "microscale-chaos", targets: ["microscale-chaos"]),
        // For the fuzz targets in fuzzing/ (a package of their own, so `swift build` here is unaffected).
        .library(name: "MicroscaleWire", targets: ["Wire"]),
        .library(name: "MicroscaleAgent", targets: ["Agent", "ControlPlane", "Membership", "Consensus", "Scaling"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-protobuf.git", from: "1.39.0"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-collections.git", from: "1.6.0"),
        .package(url: "https://github.com/x-sheep/swift-property-based.git", from: "2.0.1"),
        .package(url: "https://github.com/jpsim/Yams.git", from: "6.2.2"),
        .package(url: "https://github.com/hummingbird-project/hummingbird.git", from: "2.28.1"),
        .package(url: "https://github.com/swift-server/swift-prometheus.git", from: "2.4.1"),
        .package(url: "https://github.com/apple/swift-metrics.git", from: "2.13.0"),
    ],
    // Every target lists each module it imports, even one that another dependency brings along:
    // SwiftPM recompiles a target only when a module it lists changes, so a module reached through
    // another target can change under its objects (docs/ARCHITECTURE.md, "Every target declares
    // what it imports"; scripts/lint checks it).
    targets: [
        // System libraries (Debian: libssl-dev, liblz4-dev, libsqlite3-dev).
        .systemLibrary(name: "COpenSSL", pkgConfig: "openssl", providers: [.apt(["libssl-dev"])]),
        .systemLibrary(name: "CLZ4", pkgConfig: "liblz4", providers: [.apt(["liblz4-dev"])]),
        .systemLibrary(name: "CSQLite", pkgConfig: "sqlite3", providers: [.apt(["libsqlite3-dev"])]),

        // Seeded randomness shared by the pure cores and the simulator.
        .target(name: "Determinism", swiftSettings: strict),
        // The one table of limits on values from outside, and the parsing of human units.
        .target(name: "Bounds", swiftSettings: strict),
        // Benchmark figures over repeated trials, failed trials kept (harness only; no dependencies).
        .target(name: "Figures", swiftSettings: strict),

        // Wire: generated protobuf messages and the frame codec.
        .target(
            name: "Wire",
            dependencies: [
                "CLZ4",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "SwiftProtobuf", package: "swift-protobuf"),
            ],
            swiftSettings: strict),

        // SecureTransport: TLS 1.3 with mutual authentication on system OpenSSL.
        .target(
            name: "SecureTransport",
            dependencies: [
                "COpenSSL", "Wire",
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strict),

        // Pure protocol cores: no clock, socket, file or random source of their own.
        .target(name: "Membership", dependencies: ["Determinism", "Bounds"], swiftSettings: strict),
        .target(
            name: "Consensus",
            dependencies: ["Determinism", "Bounds", "CSQLite"],
            swiftSettings: strict),
        .target(name: "Scaling", dependencies: ["Bounds"], swiftSettings: strict),
        // The pure control plane above the cores: the leader's round, what an assignment means to a
        // node, when an executor carries it out. Cores only: no shell, no clock (docs/ARCHITECTURE.md).
        .target(
            name: "ControlPlane",
            dependencies: ["Bounds", "Membership", "Consensus", "Scaling"],
            swiftSettings: strict),

        // Shells to the outside world.
        .target(
            name: "DockerEngine",
            dependencies: [
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strict),
        .target(
            name: "Demand",
            dependencies: [
                "Determinism", "Bounds", "DockerEngine",  // DockerEngine for its small HTTP/1.1 client (MiniHTTPClient)
                "COpenSSL", "SecureTransport",  // HMAC-SHA256 for SQS's Signature V4; TLS to brokers
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strict),

        // The composition root and the thin executable.
        .target(
            name: "Agent",
            dependencies: [
                "Wire", "SecureTransport", "Bounds", "Membership", "Consensus", "Scaling", "ControlPlane", "DockerEngine", "Demand", "Determinism",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Yams", package: "Yams"),
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Metrics", package: "swift-metrics"),
            ],
            swiftSettings: strict),
        .executableTarget(
            name: "microscale",
            dependencies: ["Agent"],
            swiftSettings: strict,
            // The agent runs on every host, so its start-up and resident memory count N times.
            // Release builds link with lld and pack the ~115k relative relocations as DT_RELR
            // (glibc >= 2.36): 22 KB to read and apply at start instead of 2.7 MB of RELA.
            // Built with --static-swift-stdlib (Makefile, chaos/run), the agent is one binary.
            // See docs/ARCHITECTURE.md, "The agent binary".
            // The functions an idle agent runs come first in .text, together (linker/agent-idle.order,
            // made by scripts/idle-order): the kernel maps 64 KiB around every page fault, so idle
            // code spread over the 26 MB of .text kept 12 MiB of it resident (docs/footprint.md).
            linkerSettings: [.unsafeFlags(["-use-ld=lld", "-Xlinker", "-z", "-Xlinker", "pack-relative-relocs",
                                           "-Xlinker", "--symbol-ordering-file=\(Context.packageDirectory)/linker/agent-idle.order",
                                           "-Xlinker", "--no-warn-symbol-ordering"],
                                          .when(platforms: [.linux], configuration: .release))]),

        // Seeded whole-cluster simulation.
        .target(
            name: "SimulationKit",
            dependencies: [
                "Determinism", "Membership", "Consensus", "Scaling", "ControlPlane",
                // The pure Reconciler (DockerEngine/Reconciler) carries out assignments on the simulated engine.
                "DockerEngine",
                .product(name: "DequeModule", package: "swift-collections"),
                .product(name: "HeapModule", package: "swift-collections"),
            ],
            swiftSettings: strict),
        .executableTarget(
            name: "microscale-sim",
            dependencies: [
                "SimulationKit", "Bounds", "Scaling",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            swiftSettings: strict),

        // The harness: the chaos suite (Chaos/) and the benchmarks of real agent processes
        // (Benchmark/). It drives `microscale` processes from outside and reads the Agent's
        // `package` API views; only microscale-chaos, microscale-bench and tests link it, so the
        // agent binary carries none of it.
        .target(
            name: "Harness",
            dependencies: [
                "Agent", "Bounds", "Consensus", "Scaling", "ControlPlane", "Demand", "DockerEngine", "SecureTransport", "Figures",
                "Wire", "COpenSSL",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Yams", package: "Yams"),
            ],
            swiftSettings: strict),

        // Benchmarks of the real components: sockets, TLS, processes.
        .executableTarget(
            name: "microscale-bench",
            dependencies: [
                "SecureTransport", "Harness", "DockerEngine", "Figures",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            swiftSettings: strict),

        // The chaos suite (chaos/run): real agents, each host in its own network namespace.
        .executableTarget(
            name: "microscale-chaos",
            dependencies: ["Harness"],
            swiftSettings: strict),

        // Tests mirror Sources/.
        .testTarget(name: "DeterminismTests", dependencies: ["Determinism"], swiftSettings: strict),
        .testTarget(name: "BoundsTests", dependencies: ["Bounds"], swiftSettings: strict),
        .testTarget(name: "FiguresTests", dependencies: ["Figures"], swiftSettings: strict),
        .testTarget(
            name: "WireTests",
            dependencies: ["Wire", .product(name: "NIOCore", package: "swift-nio"), .product(name: "NIOEmbedded", package: "swift-nio")],
            swiftSettings: strict),
        .testTarget(
            name: "SecureTransportTests",
            dependencies: [
                "SecureTransport", "Agent", "Wire",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOEmbedded", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
            ],
            swiftSettings: strict),
        .testTarget(
            name: "MembershipTests",
            dependencies: ["Bounds", "Membership", "SimulationKit"],
            exclude: ["testdata"],  // golden traces, read by SWIMTraceTests
            swiftSettings: strict),
        .testTarget(
            name: "ConsensusTests",
            dependencies: ["Bounds", "Consensus", "SimulationKit"],
            exclude: ["testdata"],  // golden traces, read by RaftTraceTests
            swiftSettings: strict),
        .testTarget(
            name: "ScalingTests",
            dependencies: ["Bounds", "Scaling", "SimulationKit", .product(name: "PropertyBased", package: "swift-property-based")],
            swiftSettings: strict),
        .testTarget(name: "DockerEngineTests", dependencies: ["DockerEngine"], swiftSettings: strict),
        .testTarget(
            name: "DemandTests",
            dependencies: [
                "Demand", "Bounds", "Scaling", "DockerEngine",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
            ],
            swiftSettings: strict),
        // Harness for PlainHTTP: RaftCrashTests and LinearizableReadTests talk to real agent processes.
        .testTarget(
            name: "AgentTests",
            dependencies: [
                "Agent", "Bounds", "ControlPlane", "Harness", "Consensus", "Demand", "Determinism", "DockerEngine",
                "Membership", "Scaling", "SecureTransport", "Wire",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
            ],
            swiftSettings: strict),
        .testTarget(name: "ControlPlaneTests", dependencies: ["ControlPlane", "Consensus", "Membership", "Scaling"], swiftSettings: strict),
        .testTarget(name: "SimulationKitTests", dependencies: ["SimulationKit", "ControlPlane"], swiftSettings: strict),
        .testTarget(
            name: "HarnessTests",
            dependencies: ["Harness", .product(name: "ArgumentParser", package: "swift-argument-parser")],
            swiftSettings: strict),
    ]
)
