#!/usr/bin/env bash
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# The man pages say what the programs and the API are (TAP output, one test per check):
#   - every option `blockjobd --help` lists is in blockjobd.8's OPTIONS;
#   - every command (with its arguments) and every option `blockjobctl --help` lists is in
#     blockjobctl.1's COMMANDS and OPTIONS;
#   - every method, property and signal of dbus/org.blockjobd.Jobs1.xml, every error name of
#     service/bus/bus-errors.[ch] and the XML, every creation option of service/bus/bus-options.c
#     (with its type) and every polkit action of polkit/org.blockjobd.policy is in
#     org.blockjobd.Jobs1.5;
#   - every MESSAGE_ID and BLOCKJOBD_* journal field of the code is in blockjobd.8's LOGGING;
#   - each page renders with `MANWIDTH=80 man --warnings -l` and nothing on stderr.
#
#   docs-sync.sh SRCDIR BLOCKJOBD BLOCKJOBCTL
set -euo pipefail

src=${1:?usage: docs-sync.sh SRCDIR BLOCKJOBD BLOCKJOBCTL}
blockjobd=${2:?}
blockjobctl=${3:?}
man_dir=$src/man

for tool in man xmllint; do
        if ! command -v "$tool" >/dev/null; then
                echo "1..0 # SKIP $tool is not installed"
                exit 0
        fi
done

# shellcheck source=tests/docs/tap.sh
. "$src/tests/docs/tap.sh"

# A page as it reads on an 80-column terminal, with no formatting.
render() {
        MANWIDTH=80 man -l "$1" 2>/dev/null
}

# One section of a rendered page: from its heading to the next one.
section() {
        awk -v want="$2" '/^[A-Z]/ { on = ($0 == want) ; next } on' <<<"$1"
}

# Does TEXT hold WORD as a whole word (option names: not part of a longer one)?
has_word() {
        local text=$1 word=$2
        # shellcheck disable=SC2001 # a sed expression is clearer than nested expansions
        grep -qE -- "(^|[^A-Za-z0-9_.-])$(sed 's/[][\.|*+?(){}^$]/\\&/g' <<<"$word")(\$|[^A-Za-z0-9_-])" <<<"$text"
}

# 1. Every page renders without a warning.
for page in blockjobd.8 blockjobctl.1 org.blockjobd.Jobs1.5; do
        if [ ! -f "$man_dir/$page" ]; then
                not_ok "$page renders without warnings" "man/$page does not exist"
                continue
        fi
        err=$(MANWIDTH=80 man --warnings -l "$man_dir/$page" 2>&1 >/dev/null || echo "man exited with $?")
        if [ -z "$err" ]; then
                ok "$page renders without warnings"
        else
                mapfile -t lines <<<"$err"
                not_ok "$page renders without warnings" "MANWIDTH=80 man --warnings -l man/$page says:" "${lines[@]}"
        fi
done

# 2. blockjobd(8): the options of --help.
page=$(render "$man_dir/blockjobd.8")
options=$(section "$page" OPTIONS)
missing=()
for opt in $("$blockjobd" --help | grep -oE -- '(^|[[:space:]])--?[a-z][a-z-]*(=[A-Z]+)?' | tr -d ' '); do
        has_word "$options" "$opt" || missing+=("$opt")
done
if [ ${#missing[@]} -eq 0 ]; then
        ok "blockjobd.8 documents every option of blockjobd --help"
else
        not_ok "blockjobd.8 documents every option of blockjobd --help" \
                "not in blockjobd.8's OPTIONS: ${missing[*]}"
fi

# 3. blockjobctl(1): the commands, with their arguments, and the options of --help.
help=$("$blockjobctl" --help)
page=$(render "$man_dir/blockjobctl.1")
commands=$(section "$page" COMMANDS)
options=$(section "$page" OPTIONS)
missing=()
# "  set-speed ID BYTES      Limit ...": what precedes the description is the command's synopsis
# (a subcommand too: "bitmap add IMAGE NAME"; a long one has its description on the next line),
# and the page has it as an item of its own.
while IFS= read -r synopsis; do
        # A short item has its description on the same line, after two spaces or more.
        grep -qE "^       $synopsis( {2,}|\$)" <<<"$commands" || missing+=("'$synopsis'")
done < <(sed -n '/^Commands:/,/^$/{/^  [a-z]/p}' <<<"$help" |
        sed -E 's/^  ([a-z][^ ]*( [a-z]+)?( [A-Z]+(\.\.\.)?)*)( .*)?$/\1/')
if [ ${#missing[@]} -eq 0 ]; then
        ok "blockjobctl.1 documents every command of blockjobctl --help"
else
        not_ok "blockjobctl.1 documents every command of blockjobctl --help" \
                "not an item of blockjobctl.1's COMMANDS: ${missing[*]}"
fi
missing=()
for opt in $(sed -n '/^Options:/,$p' <<<"$help" | grep -oE -- '(^|[[:space:]])--?[a-z][a-z-]*(=[A-Za-z0-9|-]+)?' | tr -d ' '); do
        has_word "$options" "$opt" || missing+=("$opt")
done
if [ ${#missing[@]} -eq 0 ]; then
        ok "blockjobctl.1 documents every option of blockjobctl --help, with its values"
else
        not_ok "blockjobctl.1 documents every option of blockjobctl --help, with its values" \
                "not in blockjobctl.1's OPTIONS: ${missing[*]}"
fi

# 3b. blockjobd(8)'s LOGGING: every MESSAGE_ID of service/shared/message-ids.h and every
# BLOCKJOBD_* field the job entries carry (service/bus/job-journal.c).
logging=$(section "$(render "$man_dir/blockjobd.8")" LOGGING)
missing=()
for word in $(grep -oE '"[0-9a-f]{32}"' "$src/service/shared/message-ids.h" | tr -d '"') \
            $(grep -oE 'BLOCKJOBD_[A-Z_]+=' "$src/service/bus/job-journal.c" | tr -d = | sort -u); do
        has_word "$logging" "$word" || missing+=("$word")
done
if [ ${#missing[@]} -eq 0 ]; then
        ok "blockjobd.8 documents every MESSAGE_ID and journal field of the job entries"
else
        not_ok "blockjobd.8 documents every MESSAGE_ID and journal field of the job entries" \
                "not in blockjobd.8's LOGGING: ${missing[*]}"
fi

# 4. org.blockjobd.Jobs1(5): the API.
xml=$src/dbus/org.blockjobd.Jobs1.xml
page=$(render "$man_dir/org.blockjobd.Jobs1.5")
names() {
        xmllint --xpath "$1" "$xml" | grep -oE 'name="[^"]+"' | sed -E 's/name="(.*)"/\1/'
}
# Each NAME must be there: with --item, as the tag of an item ("Name()" or "Name",
# maybe with others: "AutoFinalize, AutoDismiss"); without, anywhere as a whole word.
check_names() {
        local item=0
        if [ "$1" = --item ]; then
                item=1
                shift
        fi
        local what=$1 suffix=$2
        shift 2
        local missing=() name re
        for name in "$@"; do
                if [ $item = 1 ]; then
                        re="^       ([A-Za-z]+(\(\))?, )*$name${suffix:+\(\)}(, [A-Za-z]+(\(\))?)*( +|\$)"
                        grep -qE -- "$re" <<<"$page" || missing+=("$name$suffix")
                else
                        has_word "$page" "$name$suffix" || missing+=("$name$suffix")
                fi
        done
        if [ ${#missing[@]} -eq 0 ]; then
                ok "org.blockjobd.Jobs1.5 documents every $what ($#)"
        else
                not_ok "org.blockjobd.Jobs1.5 documents every $what ($#)" \
                        "not in org.blockjobd.Jobs1.5: ${missing[*]}"
        fi
}
for iface in org.blockjobd.Jobs1.Manager org.blockjobd.Jobs1.Job; do
        mapfile -t list < <(names "//interface[@name='$iface']/method/@name")
        check_names --item "method of $iface" "()" "${list[@]}"
        mapfile -t list < <(names "//interface[@name='$iface']/property/@name")
        check_names --item "property of $iface" "" "${list[@]}"
        if [ "$iface" = org.blockjobd.Jobs1.Job ]; then
                mapfile -t list < <(names "//interface[@name='$iface']/signal/@name")
                check_names --item "signal of $iface" "()" "${list[@]}"
        fi
        if grep -qF "interface $iface {" <<<"$page"; then
                ok "org.blockjobd.Jobs1.5 shows interface $iface"
        else
                not_ok "org.blockjobd.Jobs1.5 shows interface $iface" "no 'interface $iface {' block"
        fi
done

mapfile -t list < <(cat "$src/service/bus/bus-errors.h" "$src/service/bus/bus-errors.c" "$xml" |
        grep -oE 'org\.(blockjobd\.Jobs1|freedesktop\.DBus)\.Error\.[A-Za-z]+' | sort -u)
check_names "error name of bus-errors.[ch] and the XML" "" "${list[@]}"

mapfile -t list < <(sed -nE 's/^[[:space:]]*\{ "([a-z-]+)",[[:space:]]*"([a-z]+)",.*/\1 (\2)/p' \
        "$src/service/bus/bus-options.c")
check_names "creation option of bus-options.c, with its type" "" "${list[@]}"

mapfile -t list < <(xmllint --xpath '//action/@id' "$src/polkit/org.blockjobd.policy" |
        grep -oE 'id="[^"]+"' | sed -E 's/id="(.*)"/\1/')
check_names "polkit action of org.blockjobd.policy" "" "${list[@]}"

tap_end
