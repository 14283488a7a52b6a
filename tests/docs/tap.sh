# SPDX-License-Identifier: LGPL-2.1-or-later
# shellcheck shell=bash
#
# TAP for the docs tests, sourced: `ok NAME`, `not_ok NAME [DIAGNOSTIC LINES...]`, and
# `tap_end` (the plan, and the exit status: 1 if anything failed).

n=0
failed=0
ok() {
        n=$((n + 1))
        echo "ok $n - $*"
}
not_ok() {
        n=$((n + 1))
        failed=1
        echo "not ok $n - $1"
        shift
        local line
        for line in "$@"; do
                echo "# $line"
        done
}
tap_end() {
        echo "1..$n"
        exit "$failed"
}
