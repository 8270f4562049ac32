# kache-planner tasks. `just` lists them.

set shell := ["bash", "-euo", "pipefail", "-c"]

export GOFLAGS := "-buildvcs=false"

# Tools the recipes install for themselves, pinned, outside the checkout so
# that fresh clones on the same machine reuse them (as e2e/tools.sh does).
tools := env("KACHE_TOOLS_DIR", env("XDG_CACHE_HOME", home_directory() / ".cache") / "kache-planner" / "tools")
helm_version := "v3.22.0"
ko_version := "v0.19.1"
goreleaser_version := "v2.15.1"
staticcheck_version := "v0.8.2" # also in e2e/tools.sh, for CI

service_image := "ghcr.io/kache-planner/kache-service"
sidecar_image := "ghcr.io/kache-planner/kache-sidecar"

# List the recipes.
default:
    @just --list

# Run central on 127.0.0.1:8080 with an ephemeral database.
run-service *ARGS:
    go run ./central/cmd/kache-service {{ARGS}}

# Build the kache-service binary into bin/.
build-service:
    CGO_ENABLED=0 go build -trimpath -o bin/kache-service ./central/cmd/kache-service

# Run the sidecar on 127.0.0.1:7070 (ARGS e.g. --central-endpoint http://127.0.0.1:8080 --s3-bucket kache).
run-sidecar *ARGS:
    go run ./sidecar/cmd/kache-sidecar serve {{ARGS}}

# Build the kache-sidecar binary into bin/.
build-sidecar:
    CGO_ENABLED=0 go build -trimpath -o bin/kache-sidecar ./sidecar/cmd/kache-sidecar

# Run every test with the race detector (what CI runs).
test:
    go test -race -count=1 ./...

# gofmt, go vet (also the e2e-tagged packages) and staticcheck.
lint: (_tool "staticcheck" "honnef.co/go/tools/cmd/staticcheck" staticcheck_version)
    test -z "$(gofmt -l central sidecar shared charts e2e internal tools)" || (gofmt -l central sidecar shared charts e2e internal tools; exit 1)
    go vet ./...
    go vet -tags e2e,demo ./e2e/ ./sidecar/... ./internal/...
    "{{tools}}"/staticcheck ./...

# Fuzz each decoder for a while (FUZZTIME, default 30s each).
fuzz FUZZTIME="30s":
    go test ./shared/wire -run '^$' -fuzz FuzzPlanEncoding -fuzztime {{FUZZTIME}}
    go test ./shared/wire -run '^$' -fuzz FuzzManifestEntry -fuzztime {{FUZZTIME}}
    go test ./central/internal/api -run '^$' -fuzz FuzzPlanRequest -fuzztime {{FUZZTIME}}
    go test ./central/internal/api -run '^$' -fuzz FuzzManifestRequest -fuzztime {{FUZZTIME}}
    go test ./shared/cargolock -run '^$' -fuzz FuzzParse -fuzztime {{FUZZTIME}} -fuzzminimizetime 1s
    go test ./shared/layout -run '^$' -fuzz FuzzParseEntryManifestKey -fuzztime {{FUZZTIME}}
    go test ./shared/wire -run '^$' -fuzz FuzzLockDep -fuzztime {{FUZZTIME}}
    go test ./shared/wire -run '^$' -fuzz FuzzBuildIntent -fuzztime {{FUZZTIME}}
    go test ./shared/wire -run '^$' -fuzz FuzzAppendString -fuzztime {{FUZZTIME}}
    go test ./shared/wire -run '^$' -fuzz FuzzDecodePlan -fuzztime {{FUZZTIME}}
    go test ./central/internal/api -run '^$' -fuzz FuzzDecodeIntent -fuzztime {{FUZZTIME}}
    go test ./central/internal/store -run '^$' -fuzz FuzzDecodeIdentity -fuzztime {{FUZZTIME}}
    go test ./central/internal/store -run '^$' -fuzz FuzzDecodeEntry -fuzztime {{FUZZTIME}}
    go test ./central/internal/store -run '^$' -fuzz FuzzKeyCodecs -fuzztime {{FUZZTIME}}
    go test ./sidecar/internal/hints -run '^$' -fuzz FuzzValueRoundTrip -fuzztime {{FUZZTIME}}
    go test ./sidecar/internal/packmeta -run '^$' -fuzz FuzzSniffer -fuzztime {{FUZZTIME}}
    go test ./sidecar/internal/sigv4 -run '^$' -fuzz FuzzChunkedReader -fuzztime {{FUZZTIME}}

# Central's benchmark over 1,000,000 keys: ingest rate, plans at a fleet's load while builds land (open loop), cached and uncached closed loop, peak RSS; each figure against its goal.
bench-central *ARGS:
    go run ./central/cmd/kache-bench {{ARGS}}

# Central's database size over half a year of a fleet's builds, with the 30-day retention and without (printed as it goes).
bench-retention:
    go test ./central/internal/store -run '^$' -bench BenchmarkRetentionHistory -benchtime 1x -timeout 60m

# helm lint --strict on the chart, with its defaults and each ci values file.
helm-lint: (_tool "helm" "helm.sh/helm/v3/cmd/helm" helm_version)
    "{{tools}}"/helm lint --strict charts/kache-service
    for f in charts/kache-service/ci/*-values.yaml; do "{{tools}}"/helm lint --strict charts/kache-service --values "$f"; done

# Chart tests: golden renders, schema, helm lint (ARGS: -update rewrites the golden files).
chart-test *ARGS: (_tool "helm" "helm.sh/helm/v3/cmd/helm" helm_version)
    PATH="{{tools}}:$PATH" go test -count=1 ./charts {{ARGS}}

# Central's OCI image for this platform into dist/kache-service.tar, no Docker daemon needed.
image-service: (_image "kache-service" "./central/cmd/kache-service" service_image)

# Central's multi-arch image (linux/amd64, linux/arm64), pushed to $KO_DOCKER_REPO; TAGS is comma-separated.
image-service-release TAGS="latest": (_image-release "./central/cmd/kache-service" service_image TAGS)

# The sidecar's OCI image for this platform into dist/kache-sidecar.tar, no Docker daemon needed.
image-sidecar: (_image "kache-sidecar" "./sidecar/cmd/kache-sidecar" sidecar_image)

# The sidecar's multi-arch image, pushed to $KO_DOCKER_REPO; TAGS is comma-separated.
image-sidecar-release TAGS="latest": (_image-release "./sidecar/cmd/kache-sidecar" sidecar_image TAGS)

# ko builds a static, non-root image on chainguard/static (override with $KO_DEFAULTBASEIMAGE).
_image NAME MAIN REPO: (_tool "ko" "github.com/google/ko" ko_version)
    mkdir -p dist
    KO_DOCKER_REPO={{REPO}} \
    KO_DEFAULTBASEIMAGE="${KO_DEFAULTBASEIMAGE:-cgr.dev/chainguard/static}" \
    SOURCE_DATE_EPOCH="$(git log -1 --format=%ct 2>/dev/null || echo 0)" \
    CGO_ENABLED=0 \
    "{{tools}}"/ko build {{MAIN}} --bare --push=false --sbom=none \
        --platform="linux/$(go env GOARCH)" --tags=latest --tarball=dist/{{NAME}}.tar
    @echo "dist/{{NAME}}.tar holds {{REPO}}:latest"

_image-release MAIN REPO TAGS: (_tool "ko" "github.com/google/ko" ko_version)
    : "${KO_DOCKER_REPO:?set KO_DOCKER_REPO to the repository to push to, e.g. {{REPO}}}"
    KO_DEFAULTBASEIMAGE="${KO_DEFAULTBASEIMAGE:-cgr.dev/chainguard/static}" \
    SOURCE_DATE_EPOCH="$(git log -1 --format=%ct 2>/dev/null || echo 0)" \
    CGO_ENABLED=0 \
    "{{tools}}"/ko build {{MAIN}} --bare \
        --platform=linux/amd64,linux/arm64 --tags={{TAGS}}

# Release binaries for every platform into dist/ with goreleaser, as a snapshot (ARGS e.g. --single-target).
release-snapshot *ARGS: (_tool "goreleaser" "github.com/goreleaser/goreleaser/v2" goreleaser_version)
    "{{tools}}"/goreleaser build --snapshot --clean {{ARGS}}

# Validate .goreleaser.yaml.
release-check: (_tool "goreleaser" "github.com/goreleaser/goreleaser/v2" goreleaser_version)
    "{{tools}}"/goreleaser check

# Install a pinned Go tool into the tools directory unless that version is there.
_tool NAME PKG VERSION:
    #!/usr/bin/env bash
    set -euo pipefail
    bin="{{tools}}/{{NAME}}"
    want="{{PKG}}@{{VERSION}}"
    # Same stamp as e2e/tools.sh: either may install a tool the other uses.
    if [[ -x "$bin" && "$(cat "$bin.stamp" 2>/dev/null)" == "$want" ]]; then exit 0; fi
    echo "installing $want into {{tools}}" >&2
    mkdir -p "{{tools}}"
    # From outside the module, so that a tool never ends up in go.mod.
    cd "$(mktemp -d)"
    GOBIN="{{tools}}" GOFLAGS="-modcacherw -buildvcs=false" go install "$want"
    echo "$want" > "$bin.stamp"

# Build every tool the e2e suite starts (etcd, kube-apiserver, MinIO, helm, mc) once, into ~/.cache/kache-planner/tools.
e2e-tools:
    e2e/tools.sh etcd kube-apiserver minio helm mc

# End-to-end tests: real etcd, kube-apiserver and MinIO on loopback (e2e/ and the sidecar's engine against MinIO).
e2e: e2e-tools
    KACHE_TOOLS_DIR="{{tools}}" go test -race -count=1 -tags e2e -timeout 30m -v ./e2e/ ./sidecar/internal/prefetch/ ./shared/s3source/

# What the planner does, in about five minutes: MinIO, central and two sidecars on loopback build DEMO_BUILDS (200) of ripgrep's builds with it and without; a line per build, a closing table, demo-out/hit-rate.png. Ctrl-C stops everything.
demo:
    e2e/tools.sh minio >/dev/null
    KACHE_TOOLS_DIR="{{tools}}" go test -count=1 -tags 'e2e demo' -run '^TestDemo$' -v -timeout 30m ./e2e/

# Sidecar figures: prefetch throughput from MinIO (700 packs, ~0.9 GiB) against plain minio-go GETs (goal ratio >= 0.8).
bench-sidecar:
    e2e/tools.sh minio >/dev/null
    KACHE_TOOLS_DIR="{{tools}}" go test -tags e2e -run '^$' -bench PrefetchThroughput -benchtime 1x -timeout 30m ./sidecar/internal/prefetch/
    # Then the kache-sidecar binary itself (e2e/sidecar_bench_test.go): planner latency p50/p99 from the hint
    # cache and with central down (goal p99 < 50 ms), and peak RSS while prefetching about 2 GiB (goal < 64 MiB).
    KACHE_TOOLS_DIR="{{tools}}" go test -tags e2e -run '^$' -bench 'Sidecar(PlanLatency|PrefetchRSS)' -benchtime 1x -timeout 30m ./e2e/

# Prefetch look-ahead against MinIO behind a proxy modelling a same-region bucket (40 ms to first byte, 20 MiB/s per response): 200 packs, Lookahead 0 vs 12, median wall times, their ratio and the model's prediction, peak GETs and bodies (KACHE_BENCH_NOSYNC=1: no fsync).
bench-lookahead:
    e2e/tools.sh minio >/dev/null
    KACHE_TOOLS_DIR="{{tools}}" go test -tags e2e -run '^$' -bench BenchmarkPrefetchLookahead -benchtime 1x -timeout 10m ./sidecar/internal/prefetch/

# S3 surface figures against direct MinIO, AWS SDK v2 client: local-hit GET throughput and p50, read-through and write-through time, peak RSS with 16 x 512 MiB streams, prefetch vs plain GETs to files and its CPU per GiB; each figure with its goal (KACHE_BENCH_NOSYNC=1: no fsync; ARGS e.g. -bench S3Surface/prefetch).
bench-s3 *ARGS:
    e2e/tools.sh minio >/dev/null
    KACHE_TOOLS_DIR="{{tools}}" go test -tags e2e -run '^$' -bench S3Surface -benchtime 1x -timeout 20m {{ARGS}} ./e2e/

# Time for an empty replica to rebuild from a bucket of N build manifests (default 10,000).
bench-rebuild N="10000": e2e-tools
    KACHE_E2E_REBUILD_MANIFESTS={{N}} go test -tags e2e -run '^$' -bench RebuildFromBucket -benchtime 1x -timeout 60m ./e2e/

# Replay every shipped trace: results JSON and chart per project in replay-out/.
replay:
    mkdir -p replay-out
    for t in ../shared/traces/*/; do p=$(basename "$t"); go run ./central/cmd/kache-replay --trace "$t" --json "replay-out/$p.json" --png "replay-out/$p.png"; done
