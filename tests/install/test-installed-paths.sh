#!/usr/bin/env bash
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# Every installed file that names a path names the one its build installs to, whatever the
# prefix and libexecdir: the unit's ExecStart= and Documentation=, the activation file's Exec= and
# SystemdService=, and the opener's path compiled into the daemon. The install paths come from
# meson's own record of what it installs where (meson introspect --installed). The unit goes
# where systemd looks for it: the systemdsystemunitdir of systemd.pc, or prefix/lib/systemd/system
# on a host without systemd.pc. And systemd accepts every line of the unit.
#
#   test-installed-paths.sh BUILDDIR                  check that configured tree
#   test-installed-paths.sh --setup SRCDIR OPTION...  configure SRCDIR afresh with these options
#                                                     (in a temporary directory) and check that
#   test-installed-paths.sh --no-systemd-pc --setup SRCDIR OPTION...
#                                                     the same on a host without systemd.pc: pkg-config
#                                                     finds every other .pc file, not systemd's
set -euo pipefail

meson=${MESON:-meson}
failed=0

fail() {
        echo "FAIL: $*" >&2
        failed=1
}

# The value of KEY= in FILE; fails if it is not there exactly once.
value() {
        local file=$1 key=$2 lines
        lines=$(grep -c "^$key=" "$file" || true)
        if [ "$lines" != 1 ]; then
                fail "$file has $lines $key= lines, not 1"
                return 0
        fi
        sed -n "s/^$key=//p" "$file"
}

check() {
        local build=$1
        local daemon opener unit unit_file activation activation_file xml define prefix unitdir

        # One line per thing to check: "<what> <build-tree file or -> <installed path or value>".
        while read -r what file path; do
                case $what in
                daemon) daemon=$path ;;
                opener) opener=$path ;;
                unit) unit=$path unit_file=$file ;;
                activation) activation=$path activation_file=$file ;;
                xml) xml=$path ;;
                define) define=$path ;;
                esac
        done < <(
                "$meson" introspect --installed --targets "$build" | python3 -c '
import json, os, sys

info = json.load(sys.stdin)
installed = info["installed"]

def one(name):
    found = [(src, dst) for src, dst in installed.items() if os.path.basename(dst) == name]
    if len(found) != 1:
        sys.exit("%s is installed %d times, not once" % (name, len(found)))
    return found[0]

for what, name in (("daemon", "blockjobd"), ("opener", "blockjobd-opener"),
                   ("unit", "blockjobd.service"), ("activation", "org.blockjobd.Jobs1.service"),
                   ("xml", "org.blockjobd.Jobs1.xml")):
    print(what, *one(name))

prefix = "-DBLOCKJOBD_OPENER_PATH="
defines = [p[len(prefix):].strip("\"") for t in info["targets"] for s in t["target_sources"]
           for p in s.get("parameters", []) if p.startswith(prefix)]
if len(set(defines)) != 1:
    sys.exit("BLOCKJOBD_OPENER_PATH is defined as %s" % (defines or "nothing"))
print("define", "-", defines[0])
')
        prefix=$("$meson" introspect --buildoptions "$build" | python3 -c '
import json, sys
print(next(o["value"] for o in json.load(sys.stdin) if o["name"] == "prefix"))
')

        echo "daemon: $daemon, opener: $opener"
        case $daemon in
        /*) ;;
        *) fail "the daemon is installed to a relative path: $daemon" ;;
        esac

        # Where systemd looks for units: what the same pkg-config that meson ran says.
        if pkg-config --exists systemd; then
                unitdir=$(pkg-config --variable=systemdsystemunitdir systemd)
        else
                unitdir=$prefix/lib/systemd/system
        fi
        echo "unit: $unit (systemd's unit directory: $unitdir)"
        [ "$(dirname "$unit")" = "$unitdir" ] ||
                fail "the unit is installed as $unit, not into $unitdir"

        [ "$(value "$unit_file" ExecStart)" = "$daemon" ] ||
                fail "$unit_file: ExecStart=$(value "$unit_file" ExecStart), but the daemon is installed as $daemon"
        [ "$(value "$unit_file" Documentation)" = "file://$xml" ] ||
                fail "$unit_file: Documentation=$(value "$unit_file" Documentation), but the API is installed as $xml"
        [ "$(value "$activation_file" Exec)" = "$daemon" ] ||
                fail "$activation_file: Exec=$(value "$activation_file" Exec), but the daemon is installed as $daemon"
        [ "$(value "$activation_file" SystemdService)" = "$(basename "$unit")" ] ||
                fail "$activation_file: SystemdService=$(value "$activation_file" SystemdService), but the unit is $unit"
        [ "$define" = "$opener" ] ||
                fail "the daemon runs the opener as $define, but it is installed as $opener"
        if grep -n '@[A-Za-z_]*@' "$unit_file" "$activation_file"; then
                fail "a template variable was left unset"
        fi

        # systemd reads every line of the unit: no unknown key, no value it ignores. (ExecStart=
        # names a file that is not installed yet, which verify would report.)
        if command -v systemd-analyze >/dev/null; then
                local dir messages
                dir=$(mktemp -d)
                sed "s|^ExecStart=.*|ExecStart=/bin/true|" "$unit_file" >"$dir/$(basename "$unit")"
                messages=$(systemd-analyze verify --man=no "$dir/$(basename "$unit")" 2>&1) ||
                        fail "systemd-analyze verify failed"
                rm -rf "$dir"
                [ -z "$messages" ] || fail "systemd-analyze verify $unit_file: $messages"
        fi
}

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

if [ "${1:-}" = --no-systemd-pc ]; then
        # A pkg-config path of copies of every .pc file it finds, systemd.pc left out.
        shift
        mkdir "$tmp/pkgconfig"
        IFS=: read -ra pc_dirs <<<"${PKG_CONFIG_PATH:+$PKG_CONFIG_PATH:}$(pkg-config --variable=pc_path pkg-config)"
        for dir in "${pc_dirs[@]}"; do
                for pc in "$dir"/*.pc; do
                        [ -e "$pc" ] && [ "$(basename "$pc")" != systemd.pc ] &&
                                [ ! -e "$tmp/pkgconfig/$(basename "$pc")" ] && cp "$pc" "$tmp/pkgconfig/"
                done
        done
        export PKG_CONFIG_LIBDIR=$tmp/pkgconfig
        unset PKG_CONFIG_PATH
        if pkg-config --exists systemd; then
                echo "FAIL: pkg-config still finds systemd.pc" >&2
                exit 1
        fi
fi

if [ "${1:-}" = --setup ]; then
        src=$2
        shift 2
        "$meson" setup "$tmp/build" "$src" -Dtests=false "$@" >"$tmp/setup.log" 2>&1 ||
                { cat "$tmp/setup.log" >&2; exit 1; }
        check "$tmp/build"
else
        check "$1"
fi

[ "$failed" -eq 0 ] && echo "The installed paths agree, and systemd accepts the unit."
exit "$failed"
