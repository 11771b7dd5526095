#!/usr/bin/env bash
# test.sh: builds smoe and runs every test with CTest.
#   scripts/test.sh             optimized build
#   scripts/test.sh --sanitize  under AddressSanitizer + UndefinedBehaviorSanitizer
# Tests that need ../shared/fixtures skip with a message when that folder is absent.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/build.sh "$@"
dir=build; [ "${1:-}" = "--sanitize" ] && dir=build-asan
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
ctest --test-dir "$dir" --output-on-failure -j"$(nproc)"
