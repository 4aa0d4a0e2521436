import Foundation
import Logging

/// `--log-format json`: one JSON object per line on standard error, for log shippers (Loki,
/// Elasticsearch, journald's JSON export): `time` (RFC 3339, UTC, milliseconds), `level`,
/// `message`, `label`, then every metadata key as a string (nested values as JSON).
public struct JSONLogHandler: LogHandler {
    public var logLevel: Logger.Level = .info
    public var metadata: Logger.Metadata = [:]
    public var metadataProvider: Logger.MetadataProvider?
    let label: String
    let write: @Sendable (String) -> Void

    public init(label: String, write: @escaping @Sendable (String) -> Void = JSONLogHandler.standardError) {
        self.label = label
        self.write = write
    }

    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    /// One write per line, so lines of concurrent loggers never interleave.
    public static let standardError: @Sendable (String) -> Void = { line in
        FileHandle.standardError.write(Data(line.utf8))
    }

    public func log(event: LogEvent) {
        var fields = metadata
        if let p = metadataProvider { fields.merge(p.get()) { _, new in new } }
        if let m = event.metadata { fields.merge(m) { _, new in new } }
        write(Self.line(time: Date(), level: event.level, message: event.message.description, label: label, metadata: fields))
    }

    static func line(time: Date, level: Logger.Level, message: String, label: String, metadata: Logger.Metadata) -> String {
        var object: [String: Any] = [:]
        for (k, v) in metadata { object[k] = json(v) }
        // The fixed keys win over metadata of the same name.
        object["time"] = timestamp(time)
        object["level"] = level.rawValue
        object["message"] = message
        object["label"] = label
        let data = (try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys, .withoutEscapingSlashes])) ?? Data("{}".utf8)
        return String(decoding: data, as: UTF8.self) + "\n"
    }

    static func json(_ v: Logger.Metadata.Value) -> Any {
        switch v {
        case .string(let s): return s
        case .stringConvertible(let c): return c.description
        case .array(let a): return a.map(json)
        case .dictionary(let d): return d.mapValues(json)
        }
    }

    static func timestamp(_ date: Date) -> String {
        let f = ISO8601DateFormatter()
        f.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        f.timeZone = TimeZone(identifier: "UTC")
        return f.string(from: date)
    }
}

/// The agent's log handler for `--log-format`.
enum LogFormat {
    static func handler(format: String, label: String) -> any LogHandler {
        format == "json" ? JSONLogHandler(label: label) : StreamLogHandler.standardError(label: label)
    }
}
