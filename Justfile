# kache-planner tasks. `just` lists them.

set shell := ["bash", "-euo", "pipefail", "-c"]

export GOFLAGS := "-buildvcs=false"

# List the recipes.
default:
    @just --list

# Run central on 127.0.0.1:8080 with an ephemeral database.
run-service *ARGS:
    go run ./central/cmd/kache-service {{ARGS}}

# Build the kache-service binary into bin/.
build-service:
    CGO_ENABLED=0 go build -trimpath -o bin/kache-service ./central/cmd/kache-service

# Run every test with the race detector (what CI runs).
test:
    go test -race -count=1 ./...

# gofmt and go vet.
lint:
    test -z "$(gofmt -l central shared)" || (gofmt -l central shared; exit 1)
    go vet ./...

# Fuzz each decoder for a while (FUZZTIME, default 30s each).
fuzz FUZZTIME="30s":
    go test ./shared/wire -run '^$' -fuzz FuzzPlanEncoding -fuzztime {{FUZZTIME}}
    go test ./central/internal/api -run '^$' -fuzz FuzzPlanRequest -fuzztime {{FUZZTIME}}
    go test ./central/internal/api -run '^$' -fuzz FuzzManifestRequest -fuzztime {{FUZZTIME}}
    go test ./shared/cargolock -run '^$' -fuzz FuzzParse -fuzztime {{FUZZTIME}} -fuzzminimizetime 1s
    go test ./shared/layout -run '^$' -fuzz FuzzParseEntryManifestKey -fuzztime {{FUZZTIME}}

# Central's benchmark: 1,000,000 keys, plan latency and throughput, ingest rate, RSS.
bench-central *ARGS:
    go run ./central/cmd/kache-bench {{ARGS}}
