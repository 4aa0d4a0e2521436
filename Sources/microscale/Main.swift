import Agent

@main
enum Main {
    static func main() async {
        await MicroscaleCommand.run()
    }
}
