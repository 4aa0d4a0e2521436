import DockerEngine
import Foundation
import Testing

/// Pulls from a real registry (Debian's docker-registry with htpasswd auth, started by
/// scripts/test-env): the image comes once, with the credentials of a config.json-format file; a bad
/// name and bad credentials are reported with the registry's reason and not retried before the
/// back-off. Serialized: the tests remove and pull the same tag.
@Suite(.serialized) struct ImagePullTests {
    let client: DockerClient
    let image: String
    let auth: RegistryAuth
    let registry: String

    init() throws {
        client = try DockerClient(host: try TestEnvironment.require("MICROSCALE_TEST_DOCKER_HOST"))
        image = try TestEnvironment.require("MICROSCALE_TEST_REGISTRY_IMAGE")
        registry = try TestEnvironment.require("MICROSCALE_TEST_REGISTRY")
        auth = try RegistryAuth.load(path: try TestEnvironment.require("MICROSCALE_TEST_REGISTRY_AUTH"))
    }

    /// Asks the puller until the image is no longer being pulled (bounded: 60 s).
    func settle(_ puller: ImagePuller, _ image: String) async throws -> ImagePuller.State? {
        for _ in 0..<600 {
            let s = await puller.prepare([image])[image]
            if s != .pulling { return s }
            try await Task.sleep(for: .milliseconds(100))
        }
        return .pulling
    }

    @Test func aMissingImageIsPulledOnceWithTheFilesCredentialsThenContainersStartFromIt() async throws {
        try await client.removeImage(image)
        let pulls = Counter()
        let puller = ImagePuller(client: client, auth: auth, onChange: { pulls.add() })
        // Many asks while the pull runs: one pull.
        for _ in 0..<5 { _ = await puller.prepare([image, image]) }
        // DockerIntegrationTests restarts the shared daemon: a pull it cuts fails and is retried
        // after the back-off, so wait for `ready` across failures, and count pulls against them.
        var failuresSeen = 0
        var state = try await settle(puller, image)
        for _ in 0..<20 where state != .ready {
            if case .failed(_, let n, _)? = state { failuresSeen = n }
            try await Task.sleep(for: .seconds(1))
            state = try await settle(puller, image)
        }
        #expect(state == .ready)
        #expect(pulls.value == failuresSeen + 1)
        _ = try await client.inspectImage(image)

        let node = "tpull\(UInt32.random(in: 0...UInt32.max))"
        let shell = ReconcilerShell(client: client, node: node)
        let spec = ContainerSpec(
            service: "web", node: node, specHash: "h", image: image, command: ["sleep", "60"],
            cpu: 0.1, memoryBytes: 16 << 20, stopTimeoutSeconds: 1)
        await shell.setDesired([spec], counts: ["web": 1])
        var running = 0
        for _ in 0..<50 where running != 1 {
            _ = try? await shell.converge()
            running = (try? await client.list(labels: ["\(MicroscaleLabel.node)=\(node)"], all: false).count) ?? 0
            if running != 1 { try await Task.sleep(for: .milliseconds(200)) }
        }
        #expect(running == 1)
        await shell.setDesired([spec], counts: ["web": 0])
        _ = try? await shell.converge()
    }

    @Test func badCredentialsAreReportedWithTheRegistrysReasonAndBackedOff() async throws {
        try await client.removeImage(image)
        let wrong = RegistryAuth(byRegistry: [registry: .init(username: "microscale", password: "wrong")])
        let puller = ImagePuller(client: client, auth: wrong)
        guard case .failed(let reason, let failures, _)? = try await settle(puller, image) else {
            Issue.record("the pull with wrong credentials did not fail")
            return
        }
        #expect(failures == 1)
        #expect(reason.lowercased().contains("unauthorized") || reason.lowercased().contains("authentication"), "\(reason)")
        // Within the back-off, asking again starts no new pull: the same failure comes back.
        let again = await puller.prepare([image])[image]
        guard case .failed(let sameReason, let sameFailures, _)? = again else {
            Issue.record("asked again within the back-off: \(String(describing: again))")
            return
        }
        #expect(sameReason == reason && sameFailures == 1)
        // Without credentials at all the registry refuses too.
        let none = ImagePuller(client: client)
        guard case .failed? = try await settle(none, image) else {
            Issue.record("the pull without credentials did not fail")
            return
        }
    }

    @Test func anUnknownImageIsReportedWithTheRegistrysReason() async throws {
        let puller = ImagePuller(client: client, auth: auth)
        let missing = "\(registry)/microscale/no-such-image:1"
        guard case .failed(let reason, _, _)? = try await settle(puller, missing) else {
            Issue.record("the pull of an unknown image did not fail")
            return
        }
        #expect(reason.contains("no-such-image"), "\(reason)")
        #expect(reason.lowercased().contains("not found") || reason.lowercased().contains("unknown"), "\(reason)")
    }

    @Test func referencesAndConfigFilesAreReadAsDockerDoes() throws {
        let r = ImageReference("127.0.0.1:5000/kittens/web:1.4")
        #expect(r.registry == "127.0.0.1:5000" && r.repository == "127.0.0.1:5000/kittens/web" && r.tagOrDigest == "1.4")
        let d = ImageReference("busybox@sha256:abc")
        #expect(d.registry == "docker.io" && d.repository == "busybox" && d.tagOrDigest == "sha256:abc")
        #expect(ImageReference("localhost:5000/web").tagOrDigest == "latest")
        #expect(ImageReference("library/busybox").registry == "docker.io")
        let file = Data(#"{"auths":{"https://index.docker.io/v1/":{"auth":"dTpwOnc="},"reg.example:5000":{"username":"a","password":"b"}}}"#.utf8)
        let a = try RegistryAuth.parse(file, source: "config.json")
        #expect(a.byRegistry["docker.io"] == .init(username: "u", password: "p:w"))
        #expect(a.header(for: "reg.example:5000/x:1") != nil)
        #expect(a.header(for: "other.example/x:1") == nil)
        #expect(throws: RegistryAuth.FileError.self) { try RegistryAuth.parse(Data(#"{"auths":{"x":{"auth":"!!"}}}"#.utf8), source: "c") }
    }
}

final class Counter: @unchecked Sendable {
    private let lock = NSLock()
    private var n = 0
    func add() { lock.withLock { n += 1 } }
    var value: Int { lock.withLock { n } }
}
