import Agent
import Testing
