import Demand
import Testing
