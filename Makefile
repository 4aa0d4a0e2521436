# The two commands a newcomer needs: `make demo` and `make test`. Each sets up what it needs first.
SWIFT ?= swift
CONFIG ?= debug

.PHONY: setup build release test demo chaos proto check-proto bench fuzz fuzz-seeds clean format lint

setup:
	@scripts/setup

# Release builds link the Swift runtime and Foundation statically: the agent is one binary
# (docs/ARCHITECTURE.md, "The agent binary"). Every release build uses the same flags, so
# switching between them never rebuilds the whole tree.
RELEASE_FLAGS = --static-swift-stdlib

build: setup
	$(SWIFT) build -c $(CONFIG) $(if $(filter release,$(CONFIG)),$(RELEASE_FLAGS))

release: setup
	$(SWIFT) build -c release $(RELEASE_FLAGS)

# Every test: unit, simulation, integration against a real dockerd and prometheus.
test:
	@scripts/setup --test
	@scripts/check-proto
	@scripts/lint
	@scripts/test

# Every chaos scenario, 10 repetitions each, then crash-writes (root; see chaos/README.md).
chaos:
	@scripts/setup --test
	chaos/run all --repeat $${CHAOS_REPEAT:-10}
	chaos/run crash-writes

# A local three-agent cluster; Ctrl-C stops it (DEMO_SECONDS=N stops after N seconds).
demo:
	@scripts/setup --test
	$(SWIFT) build
	@scripts/demo

proto:
	@scripts/generate-proto

# `swift format` with the committed .swift-format: `make format` rewrites, `make lint` (part of
# `make test`) fails on any difference.
format:
	@scripts/lint --fix

lint:
	@scripts/lint

check-proto:
	@scripts/check-proto

# The figures table (chaos/run bench): membership at 10/25/50 agents, Raft, the cluster.
bench: release
	@scripts/setup --test
	CHAOS_NO_BUILD=1 chaos/run bench

# libFuzzer targets in fuzzing/ (docs/fuzzing.md): FUZZ_SECONDS per target (default 60), FUZZ_TARGETS to pick.
fuzz:
	@scripts/fuzz

# Rewrites the seed corpus in fuzzing/corpus/ from the real encoders (crash reproducers stay).
fuzz-seeds:
	@FUZZ_SECONDS=0 FUZZ_TARGETS=none scripts/fuzz >/dev/null 2>&1 || true
	@for t in frame membership raft control services agent-config; do \
	  FUZZ_WRITE_SEEDS=fuzzing/corpus/$$t .build-fuzz/release/fuzz-$$t; done

clean:
	rm -rf .build .build-fuzz .fuzz
