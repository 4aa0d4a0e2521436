import Foundation

/// The agent's data directory holds the Raft log and the cluster's state (service definitions,
/// the API token's writes): readable by the agent's user only. The directory is 0700 and every
/// file in it 0600, whatever the umask; a directory or file left wider by an older version is
/// narrowed at start.
enum DataDirectory {
    static let directoryMode: mode_t = 0o700
    static let fileMode: mode_t = 0o600

    static func prepare(_ path: String) throws {
        try FileManager.default.createDirectory(
            atPath: path, withIntermediateDirectories: true,
            attributes: [.posixPermissions: Int(directoryMode)])
        narrow(path)
    }

    /// 0700 for `path` and the directories below it, 0600 for the files.
    static func narrow(_ path: String) {
        chmod(path, directoryMode)
        guard let names = try? FileManager.default.contentsOfDirectory(atPath: path) else { return }
        for name in names {
            let full = (path as NSString).appendingPathComponent(name)
            var st = stat()
            guard lstat(full, &st) == 0 else { continue }
            switch st.st_mode & S_IFMT {
            case S_IFDIR: narrow(full)
            case S_IFREG: chmod(full, fileMode)
            default: break
            }
        }
    }

    /// Writes `data` to `path` atomically (a 0600 temporary file in the same directory, synced,
    /// then renamed over it).
    static func write(_ data: Data, to path: String) throws {
        let temporary = path + ".tmp-\(getpid())"
        let fd = open(temporary, O_CREAT | O_TRUNC | O_WRONLY, fileMode)
        guard fd >= 0 else { throw CocoaError(.fileWriteNoPermission, userInfo: [NSFilePathErrorKey: temporary]) }
        fchmod(fd, fileMode)
        var ok = true
        data.withUnsafeBytes { raw in
            var offset = 0
            while offset < raw.count {
                let n = Foundation.write(fd, raw.baseAddress! + offset, raw.count - offset)
                if n <= 0 {
                    ok = false
                    return
                }
                offset += n
            }
        }
        ok = ok && fsync(fd) == 0
        close(fd)
        guard ok, rename(temporary, path) == 0 else {
            unlink(temporary)
            throw CocoaError(.fileWriteUnknown, userInfo: [NSFilePathErrorKey: path])
        }
    }
}
