import ArgumentParser
import Foundation
import Wire

/// `microscale version`: this binary's version and the wire protocol it speaks. Agents of
/// different protocol versions refuse each other at the handshake (docs/operations.md, "Upgrades").
public struct VersionCommand: ParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "version", abstract: "Print the agent version and the protocol version it speaks.")

    @Flag(help: "Print JSON.") var json = false

    public init() {}

    public struct View: Codable, Equatable {
        public var version: String
        public var protocolVersion: UInt32
    }

    static var view: View { View(version: MicroscaleVersion.current, protocolVersion: WireProtocol.version) }

    static func text(_ v: View) -> String {
        "microscale \(v.version)\nprotocol \(v.protocolVersion) (agents of another protocol version refuse each other)"
    }

    public func run() throws {
        if json {
            let e = JSONEncoder()
            e.outputFormatting = [.sortedKeys]
            print(String(decoding: try e.encode(Self.view), as: UTF8.self))
        } else {
            print(Self.text(Self.view))
        }
    }
}
