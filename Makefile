GO      ?= go
BIN     := bin/headroom
# Counted runs: a -fuzztime given in seconds can end in a spurious
# "context deadline exceeded" from the Go 1.26 fuzz coordinator.
FUZZTIME ?= 50000x
FUZZHTTPTIME ?= 2000x

# The container image and the compose cluster of deploy/ (Docker, docker-compose 1.29 or
# `docker compose`).
IMAGE   ?= headroom:dev
COMPOSE ?= $(shell command -v docker-compose >/dev/null 2>&1 && echo docker-compose || echo docker compose)
CLUSTER := HEADROOM_IMAGE=$(IMAGE) $(COMPOSE) -p headroom -f deploy/compose.yaml

.PHONY: chaos build run test mosquitto-plugin bench bench-compare bench-logstore fuzz lint clean image cluster-up cluster-down e2e-docker

build:
	CGO_ENABLED=0 $(GO) build -trimpath -o $(BIN) ./cmd/headroom

# The Mosquitto plugin (agent/connect/mosquitto/plugin): cgo, gcc and Debian's mosquitto-dev; the
# headroom binary stays pure Go.
mosquitto-plugin:
	mkdir -p build
	CGO_ENABLED=1 $(GO) build -trimpath -buildmode=c-shared -tags mosquitto -o build/headroom_mosquitto.so ./agent/connect/mosquitto/plugin
	@rm -f build/headroom_mosquitto.h

run: build
	./$(BIN) dev

# Unit, property and end-to-end tests; -race wherever goroutines meet.
test: lint
	$(GO) test -race -count=1 -timeout 15m ./...

# The seeded randomized fault campaign (cmd/headroom/chaos_test.go): 3 servers, 4 agents,
# at least 100 faults of every kind under session churn; the report ends with the checks and
# the recovery times. `make test` runs a short one (seed 16, 45 s, 20 faults). Needs root
# (the agents' data directories are small tmpfs mounts it fills).
SEED     ?= 1
DURATION ?= 10m
chaos:
	@mkdir -p bin
	@HEADROOM_CHAOS_SEED=$(SEED) HEADROOM_CHAOS_DURATION=$(DURATION) HEADROOM_CHAOS_REPORT=$(CURDIR)/bin/chaos-report.txt \
	  $(GO) test -count=1 -timeout 90m -run '^TestChaos$$' -v ./cmd/headroom/ >bin/chaos.log 2>&1; rc=$$?; \
	  if [ -f bin/chaos-report.txt ]; then cat bin/chaos-report.txt; rm -f bin/chaos-report.txt; fi; \
	  if [ $$rc -ne 0 ]; then grep -E -- '--- FAIL|_test.go:[0-9]+: ' bin/chaos.log | grep -v 'harness_test.go:451' | tail -20; \
	    echo "chaos FAIL: seed $(SEED) (whole log in bin/chaos.log)"; exit $$rc; fi

bench:
	$(GO) test -run '^$$' -bench . -benchmem -timeout 30m ./...

# Redis's concurrency limiter and the agent side by side, one run, one table (bench/compare,
# BENCHMARKS.md, issue 14). BENCH_SECONDS (default 5) is the length of each measured run;
# BENCH_ARGS are passed on (e.g. -workers 1,16 -keep). redis-server is Debian's package,
# installed here when missing.
BENCH_SECONDS ?= 5
bench-compare: build
	@command -v redis-server >/dev/null 2>&1 || { \
	  echo "bench-compare: installing redis-server (Debian package)" >&2; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null; } || \
	  { echo "bench-compare: FAIL: redis-server is missing and could not be installed" >&2; exit 1; }
	BENCH_SECONDS=$(BENCH_SECONDS) $(GO) run ./bench/compare -bin $(BIN) $(BENCH_ARGS)

# Raft log stores on this machine, raft-boltdb against raft-wal (a module of its own, so the
# store not adopted stays out of headroom's dependencies; BENCHMARKS.md, issue 20).
bench-logstore:
	cd bench/logstore && $(GO) test -count=1 -v -run 'TornWrite|LatentDamage' -bench Append -benchtime 3s .

fuzz:
	$(GO) test -run '^$$' -fuzz '^FuzzDecode$$' -fuzztime $(FUZZTIME) ./wire/
	$(GO) test -run '^$$' -fuzz '^FuzzReader$$' -fuzztime $(FUZZTIME) ./wire/
	$(GO) test -run '^$$' -fuzz '^FuzzHTTPBodies$$' -fuzztime $(FUZZHTTPTIME) ./aggregator/
	$(GO) test -run '^$$' -fuzz '^FuzzParseHook$$' -fuzztime $(FUZZTIME) ./agent/connect/nginxrtmp/
	$(GO) test -run '^$$' -fuzz '^FuzzDecodeEvent$$' -fuzztime $(FUZZTIME) ./agent/connect/livekit/
	$(GO) test -run '^$$' -fuzz '^FuzzDecodeEvent$$' -fuzztime $(FUZZTIME) ./agent/connect/emqx/

# FROM scratch around the static binary: the build context is bin/image, holding only the
# binary and an empty data/ directory (nothing can be pulled, so there is no build stage).
# The images an earlier build left untagged are removed.
image:
	rm -rf bin/image && mkdir -p bin/image/data
	CGO_ENABLED=0 GOOS=linux $(GO) build -trimpath -ldflags '-s -w' -o bin/image/headroom ./cmd/headroom
	docker build -q -f deploy/docker/Dockerfile -t $(IMAGE) \
	  --build-arg REVISION=$$(git rev-parse --short HEAD 2>/dev/null || echo unknown) bin/image
	@docker image prune -f --filter label=org.opencontainers.image.title=headroom >/dev/null
	@docker image inspect -f '$(IMAGE): {{.Size}} bytes' $(IMAGE)

# Three aggregators, three agents, three media-server stand-ins; see deploy/compose.yaml.
cluster-up: image
	$(CLUSTER) up -d
	@echo "aggregators' HTTP APIs: 127.0.0.1:9370, 127.0.0.1:9470, 127.0.0.1:9570 (bin/headroom tenant list)"

# VOLUMES=1 removes the data volumes too.
cluster-down:
	$(CLUSTER) down $(if $(VOLUMES),-v)

# The compose cluster under faults (deploy/docker_e2e_test.go). Without a Docker engine it
# is skipped, except in CI (CI=true), where it fails.
e2e-docker:
	@if ! docker info >/dev/null 2>&1; then \
	  if [ "$$CI" = true ]; then echo "e2e-docker: FAIL: the Docker engine does not answer"; exit 1; fi; \
	  echo "e2e-docker: SKIPPED: the Docker engine does not answer (docker info); in CI this fails"; exit 0; \
	fi; \
	$(MAKE) --no-print-directory build image && \
	HEADROOM_E2E_DOCKER=1 HEADROOM_IMAGE=$(IMAGE) HEADROOM_BIN=$(CURDIR)/$(BIN) \
	  $(GO) test -count=1 -v -timeout 10m -run '^TestDockerCluster$$' ./deploy/

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	  if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...

clean:
	rm -rf bin build .headroom
