import DockerEngine
import Testing
