GO      ?= go
BIN     := bin/headroom
# Counted runs: a -fuzztime given in seconds can end in a spurious
# "context deadline exceeded" from the Go 1.26 fuzz coordinator.
FUZZTIME ?= 50000x
FUZZHTTPTIME ?= 2000x

.PHONY: build run test bench fuzz lint clean

build:
	CGO_ENABLED=0 $(GO) build -trimpath -o $(BIN) ./cmd/headroom

run: build
	./$(BIN) dev

# Unit, property and end-to-end tests; -race wherever goroutines meet.
test: lint
	$(GO) test -race -count=1 -timeout 15m ./...

bench:
	$(GO) test -run '^$$' -bench . -benchmem -timeout 30m ./...

fuzz:
	$(GO) test -run '^$$' -fuzz '^FuzzDecode$$' -fuzztime $(FUZZTIME) ./wire/
	$(GO) test -run '^$$' -fuzz '^FuzzReader$$' -fuzztime $(FUZZTIME) ./wire/
	$(GO) test -run '^$$' -fuzz '^FuzzHTTPBodies$$' -fuzztime $(FUZZHTTPTIME) ./aggregator/

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	  if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...

clean:
	rm -rf bin .headroom
