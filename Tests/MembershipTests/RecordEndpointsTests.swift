import Membership
import Testing

/// Endpoints in the gossiped record (issue 17 item 5): signed, carried by deltas, bounded.
@Suite struct RecordEndpointsTests {
    let web = [Endpoint(containerPort: 8080, hostPort: 32768), Endpoint(containerPort: 8080, hostPort: 32770)]

    @Test func aRecordWithoutEndpointsSignsTheSameBytesAsBeforeEndpointsExisted() {
        let r = NodeRecord(name: "n1", address: "10.0.0.1:7480", running: ["web": 2], version: 4)
        var with = r
        with.endpoints = ["web": web]
        #expect(with.signedBytes != r.signedBytes)
        with.endpoints = [:]
        #expect(with.signedBytes == r.signedBytes)
        // The bytes an agent of the earlier build signs: no trace of endpoints.
        #expect(!String(decoding: r.signedBytes, as: UTF8.self).contains("endpoints"))
    }

    @Test func endpointsAreSignedWhateverOrderTheyAreListedIn() {
        var a = NodeRecord(name: "n1", address: "10.0.0.1:7480", version: 4)
        var b = a
        a.endpoints = ["web": web, "api": [Endpoint(containerPort: 80, hostPort: 40000)]]
        b.endpoints = ["api": [Endpoint(containerPort: 80, hostPort: 40000)], "web": web.reversed()]
        #expect(a.signedBytes == b.signedBytes)
    }

    @Test func aDeltaCarriesChangedEndpointsAndRemovesAServiceWhoseEndpointsAreGone() throws {
        var old = NodeRecord(name: "n1", address: "10.0.0.1:7480", running: ["web": 2, "api": 1], version: 4)
        old.endpoints = ["web": web, "api": [Endpoint(containerPort: 80, hostPort: 40000)]]
        var new = old
        new.version = 5
        new.running = ["web": 1, "api": 1]
        new.endpoints = ["web": [web[0]]]
        let d = NodeRecordDelta.between(old, new)
        #expect(d.endpoints == ["web": [web[0]], "api": []])
        let applied = try d.apply(to: old)
        #expect(applied.endpoints == new.endpoints)
        // Two deltas merged keep every service either touched.
        var newer = new
        newer.version = 6
        newer.endpoints = [:]
        let merged = d.merged(with: NodeRecordDelta.between(new, newer))
        #expect(try merged.apply(to: old).endpoints == [:])
    }

    @Test func endpointsOutsideTheirBoundsAreRefusedNamingTheField() {
        var r = NodeRecord(name: "n1", address: "10.0.0.1:7480", version: 1)
        r.endpoints = ["web": [Endpoint(containerPort: 0, hostPort: 80)]]
        #expect(throws: NodeRecordError.self) { try r.validate() }
        r.endpoints = ["web": [Endpoint(containerPort: 80, hostPort: 70000)]]
        do {
            try r.validate()
            Issue.record("a port above 65535 was taken")
        } catch {
            #expect("\(error)".contains("endpoints[web] host port"))
        }
        // A record stays within its 2 KiB however many containers serve: ~200 endpoints fit, 400 do not.
        r.endpoints = ["web": (0..<150).map { Endpoint(containerPort: 8080, hostPort: 32768 + $0) }]
        #expect(throws: Never.self) { try r.validate() }
        r.endpoints = ["web": (0..<400).map { Endpoint(containerPort: 8080, hostPort: 32768 + $0) }]
        #expect(throws: NodeRecordError.self) { try r.validate() }
    }
}
