#!/usr/bin/env bash
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# shell-completion/bash/blockjobctl, driven as bash drives it: COMP_WORDS and COMP_CWORD split the
# way readline splits a line (COMP_WORDBREAKS), then _blockjobctl, then COMPREPLY (TAP output).
#   - commands and options are those of `blockjobctl --help`, and each option's values too;
#   - each command is offered the options it takes, files where it takes files;
#   - job ids: from a stub blockjobctl on PATH (what the parsing makes of tricky output, which bus
#     it asks), and from the real daemon on a private system bus (tools/private-bus.sh) when
#     BLOCKJOBD is given and dbus-daemon is there: the ids of live jobs, by the status each verb
#     accepts, on the bus --address= names.
#
#   test-completion.sh SRCDIR BLOCKJOBCTL [BLOCKJOBD]
set -o pipefail

src=${1:?usage: test-completion.sh SRCDIR BLOCKJOBCTL [BLOCKJOBD]}
ctl=${2:?}
daemon=${3:-}
bash_completion=${BASH_COMPLETION:-/usr/share/bash-completion/bash_completion}

if [ ! -r "$bash_completion" ]; then
        echo "1..0 # SKIP bash-completion is not installed ($bash_completion)"
        exit 0
fi

work=$(mktemp -d)
# shellcheck disable=SC2317 # called by the trap
cleanup() {
        if [ -n "${private_bus_pid:-}" ]; then
                private_bus_stop
        fi
        rm -rf "$work"
}
trap cleanup EXIT

# bash-completion is not written for set -u; neither is this.
# shellcheck source=/dev/null
. "$bash_completion"
# shellcheck source=/dev/null
. "$src/shell-completion/bash/blockjobctl"

# compopt works only while readline completes; here it records what it was asked.
compopt_args=()
# shellcheck disable=SC2317 # called by the completion
compopt() {
        compopt_args+=("$@")
}

# shellcheck source=tests/docs/tap.sh
. "$src/tests/docs/tap.sh"

# Completes LINE (the cursor at its end) and leaves the candidates in $reply, one per line, sorted.
complete_line() {
        local line=$1 word="" c i breaks=${COMP_WORDBREAKS// /}
        COMP_WORDS=()
        for ((i = 0; i < ${#line}; i++)); do
                c=${line:i:1}
                if [[ $c == [[:space:]] ]]; then
                        [ -n "$word" ] && COMP_WORDS+=("$word")
                        word=""
                elif [[ $breaks == *"$c"* ]]; then
                        # Break characters make words of their own, several in a row one word.
                        if [ -n "$word" ] && [[ $breaks != *"${word: -1}"* ]]; then
                                COMP_WORDS+=("$word")
                                word=""
                        fi
                        word+=$c
                else
                        if [ -n "$word" ] && [[ $breaks == *"${word: -1}"* ]]; then
                                COMP_WORDS+=("$word")
                                word=""
                        fi
                        word+=$c
                fi
        done
        COMP_WORDS+=("$word")
        COMP_CWORD=$((${#COMP_WORDS[@]} - 1))
        COMP_LINE=$line
        COMP_POINT=${#line}
        COMPREPLY=()
        compopt_args=()
        _blockjobctl "${COMP_WORDS[0]}" "${COMP_WORDS[COMP_CWORD]}" "${COMP_WORDS[COMP_CWORD - 1]}" 2>"$work/stderr"
        reply=$(printf '%s\n' "${COMPREPLY[@]}" | sed '/^$/d' | sort -u)
        if [ -s "$work/stderr" ]; then
                reply+=$'\n'"STDERR: $(tr '\n' ' ' <"$work/stderr")"
        fi
}

words() {
        printf '%s\n' "$@" | sed '/^$/d' | sort -u
}

# expect NAME LINE WORD...: the candidates are exactly these words.
expect() {
        local name=$1 line=$2
        shift 2
        complete_line "$line"
        local want
        want=$(words "$@")
        if [ "$reply" = "$want" ]; then
                ok "$name"
        else
                not_ok "$name" "completing '$line|'" "expected: ${want//$'\n'/ }" "got:      ${reply//$'\n'/ }"
        fi
}

# expect_some NAME LINE [-WORD...] [WORD...]: the candidates hold these words and not the -WORDs.
expect_some() {
        local name=$1 line=$2 w bad=()
        shift 2
        complete_line "$line"
        for w in "$@"; do
                case $w in
                -*) grep -qxF -- "${w#-}" <<<"$reply" && bad+=("offers ${w#-}") ;;
                *) grep -qxF -- "$w" <<<"$reply" || bad+=("lacks $w") ;;
                esac
        done
        if [ ${#bad[@]} -eq 0 ] && ! grep -q '^STDERR' <<<"$reply"; then
                ok "$name"
        else
                not_ok "$name" "completing '$line|': ${bad[*]}" "got: ${reply//$'\n'/ }"
        fi
}

# -- commands and options, as --help has them ---------------------------------------------------

help=$("$ctl" --help)
mapfile -t help_commands < <(sed -n '/^Commands:/,/^$/{/^  [a-z]/p}' <<<"$help" | awk '{ print $1 }')
# "--sync=full|top" is offered as "--sync=", then its values.
mapfile -t help_options < <(sed -n '/^Options:/,$p' <<<"$help" |
        grep -oE -- '(^|[[:space:]])--?[a-z][a-z-]*(=[A-Za-z0-9|-]+)?' | tr -d ' ' | sed -E 's/=.*/=/')

expect "every command of --help, and nothing else" "blockjobctl " "${help_commands[@]}"
expect "commands by prefix" "blockjobctl s" status set-speed stream
expect "every option of --help, and nothing else, before a command" "blockjobctl -" "${help_options[@]}"
expect_some "an option that takes a value is offered with '=' and no space after it" "blockjobctl --sy" \
        --sync= --system
if [[ " ${compopt_args[*]} " == *" nospace "* ]]; then
        ok "no space after '--sync='"
else
        not_ok "no space after '--sync='" "compopt was called with: ${compopt_args[*]}"
fi

# Every value --help lists, for each option that lists them ("--on-source-error=report|ignore|...").
while IFS= read -r spec; do
        opt=${spec%%=*}
        IFS='|' read -r -a values <<<"${spec#*=}"
        expect "values of $opt=" "blockjobctl backup $opt=" "${values[@]}"
        expect "values of $opt, given as a separate word" "blockjobctl $opt " "${values[@]}"
done < <(sed -n '/^Options:/,$p' <<<"$help" | grep -oE -- '--[a-z-]+=[a-z0-9-]+(\|[a-z0-9-]+)+')
expect "values of --image-format=" "blockjobctl commit x --image-format=" qcow2
expect "values by prefix" "blockjobctl backup --on-target-error=i" ignore
expect "no values for --job-id=" "blockjobctl backup --job-id=" ""
expect "no values for --speed" "blockjobctl backup --speed " ""

expect_some "backup takes the copy options" "blockjobctl backup --" \
        --sync= --format= --source-format= --overwrite --job-id= --follow --json \
        -- --top= -- --base= -- --image-format= -- --granularity=
expect_some "mirror takes --granularity=" "blockjobctl mirror a --" --granularity= --sync= -- --top=
expect_some "backup takes the bitmap options, mirror does not" "blockjobctl backup --" \
        --bitmap= --bitmap-mode= --target-backing= --target-backing-format=
expect_some "mirror takes no bitmap options" "blockjobctl mirror --" --sync= -- --bitmap= -- --target-backing=
expect_some "commit takes the chain options and --top=" "blockjobctl commit --" \
        --top= --base= --backing-file= --image-format= --base-format= --until-ready \
        -- --sync= -- --source-format= -- --overwrite
expect_some "stream takes the chain options but --top=" "blockjobctl stream --" \
        --base= --backing-file= -- --top= -- --sync=
expect_some "status takes --follow, not the creation options" "blockjobctl status --" \
        --follow --json -- --job-id=
expect_some "list takes the global options only" "blockjobctl list --" \
        --json --address= -- --follow -- --job-id=
expect "bitmap's subcommands" "blockjobctl bitmap " add remove clear enable disable merge list
expect_some "bitmap add takes --granularity= and --disabled" "blockjobctl bitmap add --" \
        --granularity= --disabled -- --json -- --follow
expect_some "bitmap list takes --json and --bytes" "blockjobctl bitmap list --" --json --bytes -- --disabled
expect "nothing after list" "blockjobctl list " ""
expect "nothing after set-speed's ID" "blockjobctl set-speed x " ""
expect "commands after options and their values" "blockjobctl --json --sync=top " \
        "${help_commands[@]}"

# -- files ----------------------------------------------------------------------------------------

mkdir -p "$work/files/images" && touch "$work/files/disk.img" "$work/files/images/a.qcow2"
cd "$work/files" || exit 1
expect "backup's SOURCE is a file" "blockjobctl backup d" disk.img
expect "backup's TARGET is a file" "blockjobctl backup disk.img i" images
expect "a file in a directory" "blockjobctl mirror disk.img images/" images/a.qcow2
expect "commit's IMAGE is a file" "blockjobctl --follow commit " disk.img images
expect "stream's IMAGE, after options" "blockjobctl stream --speed 1M --base=x d" disk.img
expect "--top= is a file" "blockjobctl commit disk.img --top=d" disk.img
expect "--base is a file" "blockjobctl commit disk.img --base i" images
expect "nothing after backup's TARGET" "blockjobctl backup disk.img x " ""
expect "nothing after commit's IMAGE" "blockjobctl commit disk.img " ""
expect "bitmap's IMAGE is a file" "blockjobctl bitmap add --disabled d" disk.img
expect "no bitmap names offered" "blockjobctl bitmap remove disk.img " ""
cd - >/dev/null || exit 1

# -- job ids from a stub blockjobctl --------------------------------------------------------------

stub=$work/stub
mkdir -p "$stub"
# Two users' jobs "run1" (one running, one paused), one concluded job whose error holds what
# looks like another job, and a pending one.
cat >"$stub/blockjobctl" <<'STUB'
#!/bin/sh
echo "$*" >>"${0%/*}/calls"
cat <<'JSON'
[{"id":"run1","type":"backup","status":"running","current-progress":1,"total-progress":2,"error":"","object":"/org/blockjobd/Jobs1/job/run1"},{"id":"done1","type":"mirror","status":"concluded","current-progress":0,"total-progress":0,"error":"x [{\"id\":\"evil\",\"type\":\"backup\",\"status\":\"running\"}","object":"/org/blockjobd/Jobs1/job/done1"},{"id":"run1","type":"backup","status":"paused","current-progress":1,"total-progress":2,"error":"","object":"/org/blockjobd/Jobs1/job/run1_u1000"},{"id":"pend.1","type":"backup","status":"pending","current-progress":2,"total-progress":2,"error":"","object":"/org/blockjobd/Jobs1/job/pend_2e1"}]
JSON
STUB
# busctl answers whether the service runs, from a file.
cat >"$stub/busctl" <<'STUB'
#!/bin/sh
echo "busctl $*" >>"${0%/*}/calls"
cat "${0%/*}/running"
STUB
chmod +x "$stub/blockjobctl" "$stub/busctl"
echo "b true" >"$stub/running"
saved_path=$PATH
PATH=$stub:$PATH

expect "status: every job's id, once" "blockjobctl status " run1 done1 pend.1
expect "cancel: the jobs that accept it" "blockjobctl cancel " run1 pend.1
expect "pause: the jobs that accept it" "blockjobctl pause r" run1
expect "resume: the paused jobs" "blockjobctl resume " run1
expect "complete: no job is ready" "blockjobctl complete " ""
expect "finalize: the pending job" "blockjobctl finalize " pend.1
expect "dismiss: the concluded job" "blockjobctl dismiss " done1
expect "set-speed: the ID first" "blockjobctl set-speed " run1
expect "the ID after options" "blockjobctl --json dismiss " done1

: >"$stub/calls"
expect "ids from the bus of --address=" "blockjobctl --address=unix:path=/x/bus dismiss " done1
expect "ids from the bus of --address ADDRESS" "blockjobctl --json --address unix:path=/y/bus dismiss " done1
expect "ids from the system bus after --system" "blockjobctl --address=unix:path=/z/bus --system dismiss " done1
calls=$(cat "$stub/calls")
want="busctl --address=unix:path=/x/bus call org.freedesktop.DBus /org/freedesktop/DBus org.freedesktop.DBus NameHasOwner s org.blockjobd.Jobs1
--address=unix:path=/x/bus --json list
busctl --address=unix:path=/y/bus call org.freedesktop.DBus /org/freedesktop/DBus org.freedesktop.DBus NameHasOwner s org.blockjobd.Jobs1
--address=unix:path=/y/bus --json list
busctl --system call org.freedesktop.DBus /org/freedesktop/DBus org.freedesktop.DBus NameHasOwner s org.blockjobd.Jobs1
--json list"
if [ "$calls" = "$want" ]; then
        ok "the bus asked is the one the line names"
else
        not_ok "the bus asked is the one the line names" "calls:" "$calls"
fi

echo "b false" >"$stub/running"
: >"$stub/calls"
expect "a service that is not running has no jobs" "blockjobctl cancel " ""
if ! grep -q -- "--json list" "$stub/calls"; then
        ok "a service that is not running is not started to list its jobs"
else
        not_ok "a service that is not running is not started to list its jobs" "calls: $(cat "$stub/calls")"
fi
PATH=$saved_path

# -- job ids from the real daemon on a private bus ------------------------------------------------

if [ -z "$daemon" ]; then
        echo "# no BLOCKJOBD given: job ids from a live daemon not tested"
elif ! command -v dbus-daemon >/dev/null; then
        echo "# no dbus-daemon: job ids from a live daemon not tested"
else
        # shellcheck source=/dev/null
        . "$src/tools/private-bus.sh"
        private_bus_start "$work/bus" "$daemon" --idle-timeout=0
        address=$DBUS_SYSTEM_BUS_ADDRESS
        img=$work/images
        mkdir -p "$img"
        head -c 1M /dev/urandom >"$img/random.img"
        truncate -s 1M "$img/zero.img"

        # A running job (1 KiB/s: it will not end by itself), a paused one, a concluded one.
        if "$ctl" backup "$img/random.img" "$img/slow.img" --speed=1K --job-id=slow-1 >/dev/null &&
                "$ctl" backup "$img/random.img" "$img/paused.img" --speed=1K --job-id=paused.1 >/dev/null &&
                "$ctl" pause paused.1 &&
                "$ctl" backup "$img/zero.img" "$img/done.img" --no-auto-dismiss --job-id=done_1 --follow >/dev/null; then
                # The pause takes effect at the job's next pause point.
                for _ in $(seq 100); do
                        "$ctl" --json list | grep -q '"id":"paused.1","type":"backup","status":"paused"' && break
                        sleep 0.1
                done
                expect "live: status offers every job" "$ctl status " slow-1 paused.1 done_1
                expect "live: cancel offers the jobs that are not concluded" "$ctl cancel " slow-1 paused.1
                expect "live: resume offers the paused job" "$ctl resume " paused.1
                expect "live: dismiss offers the concluded job" "$ctl dismiss " done_1
                expect "live: complete offers nothing (no job is ready)" "$ctl complete " ""

                unset DBUS_SYSTEM_BUS_ADDRESS
                expect "live: the bus of --address=" "$ctl --address=$address pause " slow-1 paused.1
                expect "live: the bus of --address ADDRESS" "$ctl --address $address dismiss d" done_1
                start=$SECONDS
                expect "live: no bus at --address=, no ids" "$ctl --address=unix:path=$work/nobus pause " ""
                if ((SECONDS - start <= 5)); then
                        ok "live: no bus at --address= answers at once"
                else
                        not_ok "live: no bus at --address= answers at once" "it took $((SECONDS - start)) s"
                fi
                export DBUS_SYSTEM_BUS_ADDRESS=$address
        else
                not_ok "live: jobs to complete the ids of" "blockjobctl could not start them; $work/bus/blockjobd.log:" \
                        "$(cat "$work/bus/blockjobd.log" 2>/dev/null)"
        fi
fi

tap_end
