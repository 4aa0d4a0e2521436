import SimulationKit
import Testing

@Suite struct DataDrivenTests {
    @Test func aFileIsCasesOfACommandASeparatorAndTheOutputUpToABlankLine() throws {
        let text = "# about a\n\na x=1 y\n----\none\ntwo\n\nb\n----\n\n# trailing\n"
        let (cases, trailer) = try DataDriven.parse(text, file: "t.txt")
        #expect(cases.count == 2)
        #expect(cases[0].preamble == ["# about a", ""])
        #expect(cases[0].command == "a x=1 y")
        #expect(cases[0].line == 3)
        #expect(cases[0].expected == "one\ntwo")
        #expect(cases[1].expected == "")
        #expect(trailer == ["", "# trailing"])
        let c = DataDriven.Command(cases[0].command)
        #expect(c.name == "a" && c.positional == ["y"] && c.keyed == ["x": "1"])
    }

    @Test func aCommandWithoutItsSeparatorIsAnErrorNamingTheLine() {
        #expect(throws: DataDriven.ParseError.self) { try DataDriven.parse("# c\nrun\noutput\n", file: "t.txt") }
        do {
            _ = try DataDriven.parse("# c\nrun\noutput\n", file: "t.txt")
        } catch {
            #expect(error.description.hasPrefix("t.txt:2:"))
        }
    }
}
