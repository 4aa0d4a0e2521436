import COpenSSL

/// OpenSSL initialises itself on first use and, by default, registers `OPENSSL_cleanup` with
/// `atexit`. A process that exits while an event-loop thread is still handshaking or signing a
/// member record then runs that thread against freed tables and crashes in libcrypto (seen once in
/// a test process). Every entry point of this module calls `initialize()` first, so the first
/// initialisation asks for no exit handler: the kernel reclaims the memory anyway.
public enum OpenSSLLibrary {
    /// Idempotent and thread-safe (a Swift global is initialised once, under `swift_once`).
    public static func initialize() { _ = initialized }

    private static let initialized: Bool = {
        let flags =
            UInt64(OPENSSL_INIT_NO_ATEXIT) | UInt64(OPENSSL_INIT_LOAD_SSL_STRINGS)
            | UInt64(OPENSSL_INIT_LOAD_CRYPTO_STRINGS)
        return OPENSSL_init_ssl(flags, nil) == 1
    }()
}
