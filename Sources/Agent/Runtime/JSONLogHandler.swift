import Foundation
import Logging
import Synchronization

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

/// The process's log level and format as the agent's configuration gives them; a configuration
/// reload (SIGHUP) changes them, and every logger made by `ReloadableLogHandler` follows at its
/// next line (docs/operations.md, "Reloading the configuration").
public final class LogControl: Sendable {
    public static let shared = LogControl()
    private let state = Mutex<(level: Logger.Level, json: Bool)>((.info, false))

    public init() {}

    public var level: Logger.Level { state.withLock { $0.level } }
    public var format: String { state.withLock { $0.json ? "json" : "text" } }

    /// `format` is "json" or "text" (checked where the configuration is resolved).
    public func set(level: Logger.Level, format: String) {
        state.withLock { $0 = (level, format == "json") }
    }
}

/// Writes each line in the format `LogControl` holds when the line is written, at its level
/// unless this logger was given one of its own (a test's, a subcommand's).
public struct ReloadableLogHandler: LogHandler {
    let control: LogControl
    private var json: JSONLogHandler
    private var text: StreamLogHandler
    private var ownLevel: Logger.Level?

    public init(label: String, control: LogControl = .shared) {
        self.control = control
        json = JSONLogHandler(label: label)
        text = StreamLogHandler.standardError(label: label)
        // The inner handlers never filter: Logger asks this one's level.
        json.logLevel = .trace
        text.logLevel = .trace
    }

    public var logLevel: Logger.Level {
        get { ownLevel ?? control.level }
        set { ownLevel = newValue }
    }

    public var metadata: Logger.Metadata {
        get { json.metadata }
        set {
            json.metadata = newValue
            text.metadata = newValue
        }
    }

    public var metadataProvider: Logger.MetadataProvider? {
        get { json.metadataProvider }
        set {
            json.metadataProvider = newValue
            text.metadataProvider = newValue
        }
    }

    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { json[metadataKey: key] }
        set {
            json[metadataKey: key] = newValue
            text[metadataKey: key] = newValue
        }
    }

    public func log(event: LogEvent) {
        if control.format == "json" { json.log(event: event) } else { text.log(event: event) }
    }
}
