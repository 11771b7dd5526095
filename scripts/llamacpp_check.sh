#!/usr/bin/env bash
# scripts/llamacpp_check.sh: cross-check smoe's GGUF files against real llama.cpp.
#
# Installs node-llama-cpp@3.21.1 (llama.cpp's prebuilt CPU binary plus its JavaScript API) into
# build/llamacpp-check/ when it is missing (override the folder with LLAMACPP_CHECK_DIR), then runs
# scripts/llamacpp_check.mjs, which loads every given file in llama.cpp and compares its next-token
# distributions and greedy continuation with build/smoe on the same file, one line per file.
# Nothing is compiled or downloaded at run time besides that npm install (the checker calls
# getLlama with build: "never" and skipDownload: true).
#
# Usage: bash scripts/llamacpp_check.sh [checker options] MODEL.gguf [MODEL2.gguf ...]
#   checker options: --prompt TEXT, -n N (greedy tokens, 32), --kv f16|f32 (llama.cpp KV cache,
#   f16 = its default), -t THREADS (1), --json OUT.json, --smoe-arg ARG (extra option for smoe run
#   and smoe logits, repeatable: --smoe-arg --no-repack)
# Exit status: non-zero when a file fails to load or evaluate in llama.cpp (the message says which
# file and quotes llama.cpp's error), when the install fails, or on usage errors.
# Everything runs under `nice -n 19` with 1 thread by default.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dir="${LLAMACPP_CHECK_DIR:-$root/build/llamacpp-check}"
version="3.21.1"

if [ $# -eq 0 ]; then
    echo "usage: bash scripts/llamacpp_check.sh [--prompt TEXT] [-n N] [--kv f16|f32] [-t THREADS] [--json OUT.json] MODEL.gguf [...]" >&2
    exit 2
fi
command -v node >/dev/null || { echo "llamacpp_check: node (>= 20) is required" >&2; exit 2; }
command -v npm >/dev/null || { echo "llamacpp_check: npm is required" >&2; exit 2; }
[ -x "$root/build/smoe" ] || { echo "llamacpp_check: $root/build/smoe not found; build smoe first" >&2; exit 2; }

pkg="$dir/node_modules/node-llama-cpp/package.json"
have="$(node -e 'try{console.log(require(process.argv[1]).version)}catch{}' "$pkg" 2>/dev/null || true)"
if [ "$have" != "$version" ]; then
    echo "llamacpp_check: installing node-llama-cpp@$version into $dir" >&2
    mkdir -p "$dir"
    [ -f "$dir/package.json" ] || (cd "$dir" && npm init -y >/dev/null)
    # Its postinstall script is not needed (the prebuilt binaries come as optional dependencies
    # such as @node-llama-cpp/linux-x64), so --ignore-scripts keeps the install from building anything.
    (cd "$dir" && nice -n 19 npm install --no-audit --no-fund --ignore-scripts -E "node-llama-cpp@$version" >&2) || {
        echo "llamacpp_check: npm install of node-llama-cpp@$version into $dir failed" >&2
        exit 1
    }
fi

exec nice -n 19 node "$root/scripts/llamacpp_check.mjs" --modules "$dir" --smoe "$root/build/smoe" "$@"
