import Consensus
import Testing

@testable import Agent

@Suite struct RaftCodecTests {
    @Test func everyFieldOfEveryKindSurvivesTheWire() throws {
        let kinds: [RaftMessage.Kind] = [
            .preVote, .preVoteResponse, .vote, .voteResponse, .append, .appendResponse,
            .heartbeat, .heartbeatResponse, .installSnapshot, .timeoutNow, .readIndex,
            .readIndexResponse,
        ]
        for kind in kinds {
            var m = RaftMessage(kind: kind, from: "s1", to: "s2", term: 7)
            m.logTerm = 6
            m.index = 41
            m.entries = [
                Entry(term: 6, index: 42, data: [1, 2, 3]),
                Entry(term: 7, index: 43, kind: .configuration, data: ConfChange.addLearner("s4").encoded),
            ]
            m.commit = 40
            m.reject = true
            m.rejectHint = 39
            m.snapshot = Snapshot(index: 30, term: 5, configuration: Configuration(voters: ["s1", "s2", "s3"], learners: ["s4"]), data: [9, 9])
            m.readRound = 3
            m.context = [7]
            m.transfer = true
            #expect(try RaftCodec.decode(RaftCodec.frame(m)) == m, "kind \(kind)")
        }
    }

    @Test func aMessageWithDefaultsStaysWithoutASnapshot() throws {
        let m = RaftMessage(kind: .heartbeat, from: "a", to: "b", term: 1)
        let back = try RaftCodec.decode(RaftCodec.frame(m))
        #expect(back == m && back.snapshot == nil)
    }
}
