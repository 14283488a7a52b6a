#!/usr/bin/env bash
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# The API's XML is something a D-Bus binding generator takes: gdbus-codegen makes C of it (in a
# temporary directory), and the C compiles against GIO when a compiler and GIO's headers are there.
#
#   test-codegen.sh XML [CC]
set -euo pipefail

xml=${1:?usage: test-codegen.sh XML [CC]}
cc=${2:-}
if ! command -v gdbus-codegen >/dev/null; then
        echo "1..0 # SKIP gdbus-codegen is not installed"
        exit 0
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

echo "1..2"
if gdbus-codegen --interface-prefix org.blockjobd.Jobs1. --c-namespace BlockJobd \
        --generate-c-code "$tmp/blockjobd-jobs1" "$xml" >"$tmp/log" 2>&1 &&
        [ -s "$tmp/blockjobd-jobs1.c" ] && [ -s "$tmp/blockjobd-jobs1.h" ]; then
        echo "ok 1 - gdbus-codegen generates C from $(basename "$xml")"
else
        echo "not ok 1 - gdbus-codegen generates C from $(basename "$xml")"
        sed 's/^/# /' "$tmp/log"
        exit 1
fi

if [ -z "$cc" ] || ! flags=$(pkg-config --cflags gio-2.0 gio-unix-2.0 2>/dev/null); then
        echo "ok 2 - # SKIP no C compiler or no GIO headers"
        exit 0
fi
# shellcheck disable=SC2086 # flags are words
if "$cc" -fsyntax-only $flags -I"$tmp" "$tmp/blockjobd-jobs1.c" >"$tmp/log" 2>&1; then
        echo "ok 2 - the generated C compiles"
else
        echo "not ok 2 - the generated C compiles"
        sed 's/^/# /' "$tmp/log"
        exit 1
fi
