import SecureTransport
import Testing
