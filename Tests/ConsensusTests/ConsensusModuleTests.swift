import Consensus
import Testing
