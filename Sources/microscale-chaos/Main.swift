import Agent

/// `chaos/run` calls this; the suite lives in Agent/Chaos so tests can drive it too.
@main
enum Main {
    static func main() async {
        await ChaosCommand.main()
    }
}
