#!/bin/sh
# Regenerates the packs compressed by the zstd CLI (libzstd, as kache's
# packs are). Needs python3 and zstd. Run from this directory.
set -eu
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
python3 - "$tmp/pack.tar" <<'PY'
import io, json, sys, tarfile
meta = {"cache_key": "3f" * 32, "key_schema": 1, "crate_name": "serde_derive",
        "crate_types": ["proc-macro"],
        "files": [{"name": "libserde_derive-1a2b.so", "size": 3000000, "hash": "ab" * 32, "executable": False},
                  {"name": "serde_derive-1a2b.d", "size": 1200, "hash": "cd" * 32, "executable": False}],
        "stdout": "", "stderr": "warning: unused import\n", "features": ["default", "std"],
        "target": "x86_64-unknown-linux-gnu", "profile": "release", "compile_time_ms": 4321,
        "emit_kinds": ["link", "dep-info"]}
lib = b"".join(b"symbol_%07d\x00" % (i % 9973) for i in range(3000000 // 14 + 1))[:3000000]
dep = (b"dep: a b c\n" * 110)[:1200]
with tarfile.open(sys.argv[1], "w", format=tarfile.GNU_FORMAT) as t:
    for name, data in [("meta.json", json.dumps(meta).encode()),
                       ("libserde_derive-1a2b.so", lib), ("serde_derive-1a2b.d", dep)]:
        ti = tarfile.TarInfo(name)
        ti.size, ti.mode = len(data), 0o644
        t.addfile(ti, io.BytesIO(data))
PY
zstd -q -3 -c < "$tmp/pack.tar" > level3.tar.zst            # window-log 21, no content size
zstd -q -3 --long=27 -c < "$tmp/pack.tar" > long27.tar.zst  # window-log 27
zstd -q -1 --long=28 -c < "$tmp/pack.tar" > long28.tar.zst  # window-log 28: not a kache pack
zstd -q -19 -c "$tmp/pack.tar" > sized.tar.zst              # single segment, content size 3 MB
