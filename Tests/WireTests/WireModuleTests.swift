import Wire
import Testing
