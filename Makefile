# The two commands a newcomer needs: `make demo` and `make test`. Each sets up what it needs first.
SWIFT ?= swift
CONFIG ?= debug

.PHONY: setup build release test demo chaos proto check-proto bench clean

setup:
	@scripts/setup

build: setup
	$(SWIFT) build -c $(CONFIG)

release: setup
	$(SWIFT) build -c release

# Every test: unit, simulation, integration against a real dockerd and prometheus.
test:
	@scripts/setup --test
	@scripts/check-proto
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

check-proto:
	@scripts/check-proto

bench: release
	scripts/bench

clean:
	rm -rf .build
