import Membership
import Testing
