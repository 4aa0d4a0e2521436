import Harness

/// `chaos/run` calls this; the suite lives in Harness/Chaos so tests can drive it too.
@main
enum Main {
    static func main() async {
        await ChaosCommand.main()
    }
}
