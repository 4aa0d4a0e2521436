import SimulationKit
import Testing

@Suite struct SimulatedNetworkTests {
    typealias Net = SimulatedNetwork<Int, String>

    @Test func aMessageArrivesWithinTheDelayRange() {
        var net = Net(seed: 1, faults: .init(delay: .milliseconds(2) ... .milliseconds(4)))
        net.send("hi", from: 1, to: 2, now: .zero)
        #expect(net.deliver(upTo: .milliseconds(1)).isEmpty)
        let got = net.deliver(upTo: .milliseconds(4))
        #expect(got.map(\.message) == ["hi"])
        #expect(got[0].deliverAt >= .milliseconds(2))
    }

    @Test func aPartitionDropsMessagesBetweenSidesAndHealRestoresThem() {
        var net = Net(seed: 2)
        net.partition([[1], [2, 3]])
        net.send("lost", from: 1, to: 2, now: .zero)
        net.send("kept", from: 2, to: 3, now: .zero)
        #expect(net.deliver(upTo: .seconds(1)).map(\.message) == ["kept"])
        net.heal()
        net.send("back", from: 1, to: 2, now: .seconds(1))
        #expect(net.deliver(upTo: .seconds(2)).map(\.message) == ["back"])
    }

    @Test func aFrozenNodeReceivesHeldMessagesWhenItThaws() {
        var net = Net(seed: 3)
        net.freeze(2)
        net.send("wait", from: 1, to: 2, now: .zero)
        net.send("silent", from: 2, to: 1, now: .zero)
        #expect(net.deliver(upTo: .seconds(5)).isEmpty)
        net.thaw(2, now: .seconds(5))
        #expect(net.deliver(upTo: .seconds(5)).map(\.message) == ["wait"])
    }

    @Test func aCrashLosesWhatWasInFlightToTheNode() {
        var net = Net(seed: 4)
        net.send("doomed", from: 1, to: 2, now: .zero)
        net.crash(2)
        #expect(net.deliver(upTo: .seconds(1)).isEmpty)
        #expect(net.statistics.dropped == 1)
    }

    @Test func lossDropsAboutItsShare() {
        var net = Net(seed: 5, faults: .init(loss: 0.2))
        for i in 0..<10_000 { net.send("m", from: 1, to: 2, now: .milliseconds(Int64(i))) }
        let n = net.deliver(upTo: .seconds(60)).count
        #expect(abs(Double(n) / 10_000 - 0.8) < 0.02)
    }

    @Test func theSameSeedDeliversTheSameWay() {
        func run() -> [Duration] {
            var net = Net(seed: 6, faults: .init(loss: 0.1, duplication: 0.1, delay: .milliseconds(1) ... .milliseconds(50)))
            for i in 0..<200 { net.send("\(i)", from: i % 5, to: (i + 1) % 5, now: .milliseconds(Int64(i))) }
            return net.deliver(upTo: .seconds(10)).map(\.deliverAt)
        }
        #expect(run() == run())
    }
}
