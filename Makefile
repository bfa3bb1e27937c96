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

.PHONY: build run test mosquitto-plugin bench bench-logstore fuzz lint clean image cluster-up cluster-down e2e-docker

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

bench:
	$(GO) test -run '^$$' -bench . -benchmem -timeout 30m ./...

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
