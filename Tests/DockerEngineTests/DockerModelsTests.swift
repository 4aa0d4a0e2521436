import DockerEngine
import Foundation
import Testing

/// The Engine API bodies decode from what the daemon writes. `GET /containers/{id}/json` of a
/// running container, trimmed to the fields `ContainerInspect` reads plus some it skips.
private let runningInspect = #"""
    {"Id":"4d90088b112a","Created":"2026-12-01T17:33:39.476322801Z","Name":"/web-1",
     "State":{"Status":"running","Running":true,"Paused":false,"Restarting":false,"OOMKilled":false,
              "Dead":false,"Pid":26595,"ExitCode":0,"Error":"","StartedAt":"2026-12-01T17:33:39.643870226Z",
              "FinishedAt":"0001-01-01T00:00:00Z","Health":{"Status":"healthy","FailingStreak":0}},
     "Config":{"Image":"busybox","Labels":{"io.microscale.managed":"true"},"Cmd":["sleep","600"],"StopTimeout":10},
     "HostConfig":{"NanoCpus":250000000,"Memory":33554432,"Init":true,"NetworkMode":"microscale",
                   "RestartPolicy":{"Name":"no","MaximumRetryCount":0}},
     "NetworkSettings":{"Ports":{"8080/tcp":[{"HostIp":"0.0.0.0","HostPort":"32768"}],"9090/tcp":null},
                        "Networks":{"microscale":{"IPAddress":"172.18.0.2"}}}}
    """#

@Suite struct DockerModelsTests {
    @Test func aRunningContainersInspectGivesItsHostPidAndEveryFieldAroundTheState() throws {
        let i = try JSONDecoder().decode(ContainerInspect.self, from: Data(runningInspect.utf8))
        #expect(i.State.Pid == 26595)
        #expect(i.State.Running && i.State.Status == "running" && i.State.ExitCode == 0)
        #expect(i.State.OOMKilled == false && i.State.Health?.Status == "healthy")
        #expect(i.State.StartedAt == "2026-12-01T17:33:39.643870226Z")
        // The fields decoded after the state: a layout that moved under them shows here first.
        #expect(i.Id == "4d90088b112a" && i.Name == "/web-1")
        #expect(i.Config.Image == "busybox" && i.Config.Cmd == ["sleep", "600"] && i.Config.StopTimeout == 10)
        #expect(i.Config.Labels?[MicroscaleLabel.managed] == "true")
        #expect(i.HostConfig.NanoCpus == 250_000_000 && i.HostConfig.Memory == 32 << 20)
        #expect(i.HostConfig.Init == true && i.HostConfig.NetworkMode == "microscale")
        #expect(i.HostConfig.RestartPolicy?.Name == "no")
        #expect(i.NetworkSettings?.Ports?["8080/tcp"]??.first?.HostPort == "32768")
        let unpublished = try #require(i.NetworkSettings?.Ports?["9090/tcp"])
        #expect(unpublished == nil)
        #expect(i.NetworkSettings?.Networks?["microscale"]?.IPAddress == "172.18.0.2")
    }

    @Test func anExitedContainersPidIsZeroAndAnInspectWithoutOneStillDecodes() throws {
        let exited = #"{"Id":"a","State":{"Status":"exited","Running":false,"Pid":0,"ExitCode":137},"Config":{},"HostConfig":{}}"#
        let e = try JSONDecoder().decode(ContainerInspect.self, from: Data(exited.utf8))
        #expect(e.State.Pid == 0 && e.State.ExitCode == 137 && !e.State.Running)
        let older = #"{"Id":"b","State":{"Status":"created","Running":false,"ExitCode":0},"Config":{},"HostConfig":{}}"#
        let o = try JSONDecoder().decode(ContainerInspect.self, from: Data(older.utf8))
        #expect(o.State.Pid == nil && o.State.Status == "created")
    }
}
