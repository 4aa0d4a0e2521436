/// SecureTransport: TLS 1.3 with mutual authentication over system OpenSSL, for SwiftNIO.
