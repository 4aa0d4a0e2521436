import DockerEngine
import Foundation

// Thin: parse flags, run DockerBenchmark, print. Usage:
//   microscale-bench docker [--host unix:///path] [--image NAME] [--containers N] [--parallelism N] [--json]
@main
struct MicroscaleBench {
    static func main() async {
        var args = Array(CommandLine.arguments.dropFirst())
        guard args.first == "docker" else {
            FileHandle.standardError.write(Data("usage: microscale-bench docker [--host unix:///path] [--image NAME] [--containers N] [--parallelism N] [--json]\n".utf8))
            exit(2)
        }
        args.removeFirst()
        let env = ProcessInfo.processInfo.environment
        var host = env["MICROSCALE_TEST_DOCKER_HOST"] ?? env["DOCKER_HOST"] ?? "unix:///var/run/docker.sock"
        var image = env["MICROSCALE_TEST_IMAGE"] ?? "microscale-test:latest"
        var containers = 20, parallelism = 8, json = false
        var i = 0
        func value(_ flag: String) -> String {
            i += 1
            guard i < args.count else { fail("\(flag) needs a value") }
            return args[i]
        }
        while i < args.count {
            switch args[i] {
            case "--host": host = value("--host")
            case "--image": image = value("--image")
            case "--containers": containers = Int(value("--containers")) ?? { fail("--containers must be a number") }()
            case "--parallelism": parallelism = Int(value("--parallelism")) ?? { fail("--parallelism must be a number") }()
            case "--json": json = true
            default: fail("unknown flag \(args[i])")
            }
            i += 1
        }
        do {
            let figures = try await DockerBenchmark(host: host, image: image, containers: containers, parallelism: parallelism).run()
            if json {
                let enc = JSONEncoder()
                enc.outputFormatting = [.prettyPrinted, .sortedKeys]
                print(String(decoding: try enc.encode(figures), as: UTF8.self))
            } else {
                print(DockerBenchmark.report(figures))
            }
        } catch {
            fail("\(error)")
        }
    }

    static func fail(_ why: String) -> Never {
        FileHandle.standardError.write(Data("microscale-bench: \(why)\n".utf8))
        exit(2)
    }
}
