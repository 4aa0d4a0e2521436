import ArgumentParser
import Foundation

/// `microscale operator snapshot save FILE | restore FILE` (docs/operations.md, docs/consensus.md).
public struct OperatorCommand: AsyncParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "operator", abstract: "Back up and restore the cluster state; manage the Raft servers.",
        subcommands: [SnapshotCommand.self, RaftCommand.self])
    public init() {}
}

/// `microscale operator raft list-peers [--json] | remove-peer NAME` (docs/operations.md).
public struct RaftCommand: AsyncParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "raft", abstract: "List and remove the Raft servers.", subcommands: [ListPeers.self, RemovePeer.self])
    public init() {}

    public struct ListPeers: AsyncParsableCommand {
        public static let configuration = CommandConfiguration(commandName: "list-peers", abstract: "List the Raft servers: voters and learners.")
        @OptionGroup var client: HTTPClientOptions
        @Flag(help: "Print JSON.") var json = false
        public init() {}

        public func run() async throws {
            try await reportingErrors {
                let (peers, raw) = try await client.get("/v1/operator/raft/peers", as: [RaftPeer].self)
                if json { return printJSON(raw) }
                print(
                    formatTable(
                        [["NAME", "ADDRESS", "STATE", "VOTER"]]
                            + peers.map {
                                [
                                    $0.name, $0.address.isEmpty ? "-" : $0.address, $0.leader ? "leader" : $0.voter ? "follower" : "learner",
                                    $0.voter ? "true" : "false",
                                ]
                            }))
            }
        }
    }

    public struct RemovePeer: AsyncParsableCommand {
        public static let configuration = CommandConfiguration(
            commandName: "remove-peer",
            abstract: "Remove a server from the Raft configuration (one that is gone for good; a live server is added back).")
        @OptionGroup var client: HTTPClientOptions
        @Flag(help: "Print JSON.") var json = false
        @Argument(help: "The server's name.") var name: String
        public init() {}

        public func run() async throws {
            try await reportingErrors {
                let raw = try await client.call("DELETE", "/v1/operator/raft/peers/\(try pathSegment(name, "NAME"))")
                if json { return printJSON(raw) }
                print("removed \(name) from the Raft configuration")
            }
        }
    }
}

/// `microscale leave`: the agent this talks to leaves the cluster (a server hands leadership off
/// and leaves the Raft configuration first) and stops.
public struct LeaveCommand: AsyncParsableCommand {
    public static let configuration = CommandConfiguration(commandName: "leave", abstract: "Make the agent leave the cluster and stop.")
    @OptionGroup var client: HTTPClientOptions
    @Flag(help: "Print JSON.") var json = false
    public init() {}

    public func run() async throws {
        try await reportingErrors {
            let raw = try await client.call("POST", "/v1/agent/leave", timeout: .seconds(30))
            if json { return printJSON(raw) }
            print("the agent left the cluster and is stopping")
        }
    }
}

public struct SnapshotCommand: AsyncParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "snapshot", abstract: "Save or restore a copy of the declared cluster state.",
        subcommands: [Save.self, Restore.self])
    public init() {}

    public struct Save: AsyncParsableCommand {
        public static let configuration = CommandConfiguration(
            commandName: "save", abstract: "Save the services, demand values and drained nodes to FILE.")
        @OptionGroup var client: HTTPClientOptions
        @Flag(help: "Print JSON.") var json = false
        @Argument(help: "Where to write the snapshot (replaced atomically).") var file: String
        public init() {}

        public func run() async throws {
            try await reportingErrors {
                let data = try await client.call("GET", "/v1/operator/snapshot")
                // Checked as restore will check it, so a file that would be refused is never written.
                let header: SnapshotFile.Header
                do { (header, _) = try SnapshotFile.decode(Array(data)) } catch {
                    throw CLIError("the agent sent a snapshot that does not check: \(error)")
                }
                try SnapshotCommand.writeAtomically(data, to: file)
                if json {
                    let e = JSONEncoder()
                    e.outputFormatting = [.sortedKeys]
                    return printJSON(try e.encode(header))
                }
                print("saved the state at entry \(header.index) to \(file) (\(data.count) bytes, sha256 \(header.sha256.prefix(12))…)")
            }
        }
    }

    public struct Restore: AsyncParsableCommand {
        public static let configuration = CommandConfiguration(
            commandName: "restore",
            abstract: "Replace the services, demand values and drained nodes with those of FILE, on every server.")
        @OptionGroup var client: HTTPClientOptions
        @Flag(help: "Print JSON.") var json = false
        @Argument(help: "A file written by 'operator snapshot save'.") var file: String
        public init() {}

        public func run() async throws {
            try await reportingErrors {
                let bytes = try SnapshotCommand.read(file)
                // Checked here first so that the error names this file; the leader checks again.
                do { _ = try SnapshotFile.decode(bytes) } catch { throw CLIError("\(file): \(error)", exitCode: 2) }
                let raw = try await client.call("PUT", "/v1/operator/snapshot", body: Data(bytes), timeout: .seconds(30))
                if json { return printJSON(raw) }
                guard let r = try? JSONDecoder().decode(RestoreView.self, from: raw) else { return printJSON(raw) }
                print(
                    "restored \(r.services) services, \(r.demand) demand values and \(r.drainedNodes) drained nodes "
                        + "from \(file) (entry \(r.index))")
            }
        }
    }

    static func read(_ file: String) throws -> [UInt8] {
        guard let handle = FileHandle(forReadingAtPath: file) else { throw CLIError("cannot read \(file)") }
        defer { try? handle.close() }
        // One byte past the limit tells a file at the limit from a larger one without reading it all.
        let data = (try? handle.read(upToCount: SnapshotFile.maxBytes + 1)) ?? Data()
        guard data.count <= SnapshotFile.maxBytes else {
            throw CLIError("\(file): \(SnapshotFile.Failure.tooLarge(data.count))", exitCode: 2)
        }
        return Array(data)
    }

    /// Writes to a temporary file beside `file`, syncs it, then renames it over `file`: a reader
    /// (or a crash) sees the old file or the whole new one, never a part. Mode 0600: the file
    /// holds every service's configuration.
    static func writeAtomically(_ data: Data, to file: String) throws {
        let temporary = file + ".tmp-\(getpid())"
        let fd = open(temporary, O_WRONLY | O_CREAT | O_TRUNC, 0o600)
        guard fd >= 0 else { throw CLIError("cannot write \(temporary): \(String(cString: strerror(errno)))") }
        let handle = FileHandle(fileDescriptor: fd, closeOnDealloc: true)
        do {
            try handle.write(contentsOf: data)
            try handle.synchronize()
            try handle.close()
        } catch {
            unlink(temporary)
            throw CLIError("cannot write \(temporary): \(error.localizedDescription)")
        }
        guard rename(temporary, file) == 0 else {
            let why = String(cString: strerror(errno))
            unlink(temporary)
            throw CLIError("cannot rename \(temporary) to \(file): \(why)")
        }
    }
}

/// `microscale force-leave NODE`: marks a failed node left in gossip, so that every member treats
/// it as gone for good (a server is then removed from the Raft configuration at once).
public struct ForceLeaveCommand: AsyncParsableCommand {
    public static let configuration = CommandConfiguration(commandName: "force-leave", abstract: "Mark a failed node as left.")
    @OptionGroup var client: HTTPClientOptions
    @Flag(help: "Print JSON.") var json = false
    @Argument(help: "The failed node's name.") var node: String
    public init() {}

    public func run() async throws {
        try await reportingErrors {
            let raw = try await client.call("POST", "/v1/agent/force-leave/\(try pathSegment(node, "NODE"))")
            if json { return printJSON(raw) }
            print("\(node) marked left")
        }
    }
}
