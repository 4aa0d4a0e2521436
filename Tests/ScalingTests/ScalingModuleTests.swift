import Scaling
import Testing
