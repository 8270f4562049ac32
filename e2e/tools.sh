#!/usr/bin/env bash
# Builds the servers the e2e tests start (etcd, kube-apiserver, MinIO) and the
# tools CI runs (helm, staticcheck) from the Go module proxy, once: a binary is rebuilt only when its tools module (or
# pinned version) changes. They live outside the checkout
# ($KACHE_TOOLS_DIR, default ~/.cache/kache-planner/tools) so fresh clones on
# the same machine reuse them. Prints the bin directory.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
bin="${KACHE_TOOLS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/kache-planner/tools}"
mkdir -p "$bin"
export GOFLAGS="-buildvcs=false -trimpath"

build_module() { # name dir
  local name=$1 dir=$2
  local stamp
  stamp=$(cat "$dir/go.mod" "$dir/go.sum" "$dir/main.go" | sha256sum | cut -c1-16)
  if [ -x "$bin/$name" ] && [ "$(cat "$bin/$name.stamp" 2>/dev/null)" = "$stamp" ]; then
    return
  fi
  echo "building $name (one time; cached in $bin) ..." >&2
  (cd "$dir" && CGO_ENABLED=0 go build -o "$bin/$name" .)
  echo "$stamp" > "$bin/$name.stamp"
}

build_install() { # name module@version
  local name=$1 mod=$2
  if [ -x "$bin/$name" ] && [ "$(cat "$bin/$name.stamp" 2>/dev/null)" = "$mod" ]; then
    return
  fi
  echo "building $name from $mod (one time; cached in $bin) ..." >&2
  (cd /tmp && CGO_ENABLED=0 GOBIN="$bin" go install "$mod")
  echo "$mod" > "$bin/$name.stamp"
}

for t in "${@:-etcd kube-apiserver minio helm}"; do
  for name in $t; do
    case $name in
      etcd) build_module etcd "$root/tools/etcd" ;;
      kube-apiserver) build_module kube-apiserver "$root/tools/kube-apiserver" ;;
      minio) build_install minio github.com/minio/minio@v0.0.0-20260212201848-7aac2a2c5b7c ;;
      helm) build_install helm helm.sh/helm/v3/cmd/helm@v3.22.0 ;;
      staticcheck) build_install staticcheck honnef.co/go/tools/cmd/staticcheck@v0.8.2 ;;
      # mc at the version the pinned MinIO itself requires, so its modules
      # are mostly downloaded already: a third-party S3 client for the
      # sidecar's S3 surface tests.
      mc) build_install mc github.com/minio/mc@v0.0.0-20250313080218-cf909e1063a9 ;;
      *) echo "unknown tool $name" >&2; exit 2 ;;
    esac
  done
done
echo "$bin"
