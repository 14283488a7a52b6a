#!/usr/bin/python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""The Cockpit page (cockpit/, issue 16) in a real browser: Debian's headless chromium, over the
DevTools protocol (cdp.py), against cockpit-ws with a local session whose bridge talks to
blockjobd from the build tree on a private system bus. Every check looks at what the page shows
and at what the daemon then reports (busctl, qemu-img). Nothing sleeps and hopes: each wait is for
a condition, with a generous timeout. TAP on stdout; the browser's console and the steps on
stderr; screenshots in the meson log directory.

Usage: test-cockpit-page.py LOGDIR   (environment: BLOCKJOBD, BLOCKJOBD_OPENER, COCKPIT_PAGE)
"""

import json
import pwd
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import traceback
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import cdp  # noqa: E402

MIB = 1024 * 1024
MANAGER = "/org/blockjobd/Jobs1"
NAME = "org.blockjobd.Jobs1"
JOB_IFACE = "org.blockjobd.Jobs1.Job"
MANAGER_IFACE = "org.blockjobd.Jobs1.Manager"
COCKPIT_WS = ["/usr/lib/cockpit/cockpit-ws", "/usr/libexec/cockpit-ws"]
COCKPIT_BRIDGE = "/usr/bin/cockpit-bridge"
WAIT = 120  # seconds for anything the page or the daemon should do: generous, never a timing assert


def log(*args):
    print(*args, file=sys.stderr, flush=True)


class Tap:
    def __init__(self):
        self.n = 0
        self.failed = 0

    def ok(self, cond, name, detail=""):
        self.n += 1
        if cond:
            print(f"ok {self.n} - {name}", flush=True)
        else:
            self.failed += 1
            print(f"not ok {self.n} - {name}", flush=True)
            for line in str(detail).splitlines():
                print(f"# {line}", flush=True)
        return cond


class Env:
    """The private system bus, blockjobd, cockpit-ws and chromium; stop() ends them all."""

    def __init__(self, work):
        self.work = work
        self.procs = []
        self.browser = None
        self.env = dict(os.environ)

    def spawn(self, argv, logname, env=None, stdout=None):
        logf = open(os.path.join(self.work, logname), "w")
        p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=stdout or logf, stderr=logf,
                             env=env or self.env, start_new_session=True)
        self.procs.append((p, logf))
        return p

    def start_bus(self):
        conf = os.path.join(self.work, "bus.conf")
        with open(conf, "w") as f:
            f.write(f"""<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path={self.work}/bus</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <allow own="*"/>
    <allow send_destination="*"/>
    <allow receive_sender="*"/>
  </policy>
</busconfig>
""")
        bus = self.spawn(["dbus-daemon", "--config-file=" + conf, "--nofork", "--nosyslog", "--print-address=1"],
                         "bus.log", stdout=subprocess.PIPE)
        address = bus.stdout.readline().decode().strip()
        if not address:
            raise RuntimeError("dbus-daemon did not start")
        self.env["DBUS_SYSTEM_BUS_ADDRESS"] = address

    def busctl(self, *args, check=True):
        r = subprocess.run(["busctl", "--system", *args], env=self.env, capture_output=True, text=True,
                           timeout=60)
        if check and r.returncode != 0:
            raise RuntimeError(f"busctl {' '.join(args)}: {r.stderr.strip()}")
        return r

    def prop(self, path, name, iface=JOB_IFACE):
        r = self.busctl("-j", "get-property", NAME, path, iface, name)
        return json.loads(r.stdout)["data"]

    def start_daemon(self):
        env = dict(self.env, BLOCKJOBD_OPENER=os.environ["BLOCKJOBD_OPENER"])
        env.pop("STATE_DIRECTORY", None)
        self.daemon = self.spawn([os.environ["BLOCKJOBD"], "--idle-timeout=0"], "daemon.log", env=env)
        deadline = time.monotonic() + WAIT
        while True:
            r = self.busctl("call", "org.freedesktop.DBus", "/org/freedesktop/DBus", "org.freedesktop.DBus",
                            "NameHasOwner", "s", NAME)
            if r.stdout.strip() == "b true":
                return
            if self.daemon.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("blockjobd did not take its name (see daemon.log)")
            time.sleep(0.05)

    def start_cockpit(self, user=None):
        """cockpit-ws with a local session (its bridge runs as the user that runs it: root, or
        `user` through setpriv); its base URL."""
        ws = next((p for p in COCKPIT_WS if os.access(p, os.X_OK)), None)
        name = user or "root"
        data = os.path.join(self.work, "data")
        if not os.path.exists(data):
            os.makedirs(os.path.join(data, "cockpit"))
            os.symlink(os.environ["COCKPIT_PAGE"], os.path.join(data, "cockpit", "blockjobd"))
        home = os.path.join(self.work, "home-" + name)
        os.makedirs(home)
        argv = []
        if user:
            # The bus socket and the page's directory must be reachable for the user.
            os.chmod(self.work, 0o755)
            pw = pwd.getpwnam(user)
            os.chown(home, pw.pw_uid, pw.pw_gid)
            argv = ["setpriv", f"--reuid={pw.pw_uid}", f"--regid={pw.pw_gid}", "--clear-groups", "--"]
        # The bridge finds packages in XDG_DATA_DIRS/cockpit: the page from the build tree first,
        # Cockpit's own (base1, shell, static) after it; HOME keeps ~/.local/share/cockpit out.
        env = dict(self.env, HOME=home, XDG_DATA_DIRS=data + ":/usr/share", XDG_CONFIG_DIRS=home,
                   XDG_RUNTIME_DIR=home, USER=name, LOGNAME=name)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        ws_proc = self.spawn(argv + [ws, "--no-tls", "--local-session=" + COCKPIT_BRIDGE, "--address", "127.0.0.1",
                                     "--port", str(port)], f"cockpit-ws-{name}.log", env=env)
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + WAIT
        while True:
            try:
                with urllib.request.urlopen(base + "/cockpit/@localhost/blockjobd/manifest.json", timeout=30) as r:
                    if json.load(r)["tools"]["index"]["label"]:
                        return base
            except OSError:
                pass
            if ws_proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"cockpit-ws does not serve the page (see cockpit-ws-{name}.log)")
            time.sleep(0.1)

    def stop(self):
        if self.browser:
            self.browser.close()
        # In the reverse order of their start: cockpit-ws (and its bridge), the daemon (SIGTERM
        # cancels its jobs), the bus.
        for p, logf in reversed(self.procs):
            if p.poll() is None:
                try:
                    os.killpg(p.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
                try:
                    p.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    os.killpg(p.pid, signal.SIGKILL)
                    p.wait()
            logf.close()


def qemu_img(*args):
    return subprocess.run(["qemu-img", *args], capture_output=True, text=True, timeout=300)


def make_image(path, size_mib, fmt="raw", data_mib=None):
    """An image with data (random: nothing reads as zeroes, so a speed limit governs all of it)."""
    data_mib = size_mib if data_mib is None else data_mib
    raw = path if fmt == "raw" else path + ".data"
    with open(raw, "wb") as f:
        f.write(os.urandom(data_mib * MIB))
        f.truncate(size_mib * MIB)
    if fmt != "raw":
        r = qemu_img("convert", "-f", "raw", "-O", fmt, raw, path)
        os.unlink(raw)
        if r.returncode != 0:
            raise RuntimeError(r.stderr)


# JavaScript the checks use: the page's row for a job id, and what it shows.
PAGE_JS = """
window.t = {
    row: id => document.querySelector(`#job-rows tr[data-job-id="${id}"]`),
    status: id => { const r = t.row(id); return r ? r.querySelector("[data-status]").getAttribute("data-status") : null; },
    label: id => { const r = t.row(id); return r ? r.querySelector(".job-status .pf-c-label").textContent : null; },
    percent: id => { const r = t.row(id); return r ? Number(r.querySelector("[role=progressbar]").getAttribute("aria-valuenow")) : null; },
    facts: id => { const r = t.row(id); return r ? r.querySelector(".job-progress-facts").textContent : null; },
    verbs: id => { const r = t.row(id); return r ? [...r.querySelectorAll("button[data-verb]")].map(b => b.getAttribute("data-verb")).sort() : null; },
    click: (id, verb) => { const b = t.row(id).querySelector(`button[data-verb="${verb}"]`); b.click(); return true; },
    text: id => { const r = t.row(id); return r ? r.textContent : null; },
    message: id => { const r = t.row(id); const m = r && r.querySelector(".job-message"); return m ? m.textContent : ""; },
    set: (sel, value) => { const e = document.querySelector(sel); e.value = value; e.dispatchEvent(new Event("input")); e.dispatchEvent(new Event("change")); return true; },
};
true
"""

# Verb names of AllowedVerbs and the page's buttons (the job's method names).
VERB_BUTTON = {"pause": "Pause", "resume": "Resume", "complete": "Complete", "finalize": "Finalize",
               "cancel": "Cancel", "dismiss": "Dismiss", "set-speed": "SetSpeed"}


def expected_buttons(allowed, status):
    """The buttons AllowedVerbs asks for, exactly; never both Pause and Resume."""
    assert not ("pause" in allowed and "resume" in allowed), f"{status}: AllowedVerbs {allowed}"
    return sorted(VERB_BUTTON[v] for v in allowed)


def main():
    logdir = sys.argv[1] if len(sys.argv) > 1 else "."
    if not shutil.which("chromium") or not any(os.access(p, os.X_OK) for p in COCKPIT_WS) or \
            not os.access(COCKPIT_BRIDGE, os.X_OK):
        print("1..0 # SKIP chromium, cockpit-ws or cockpit-bridge is missing (tools/test installs them)")
        return 0
    tap = Tap()
    work = tempfile.mkdtemp(prefix="blockjobd-browser-")
    env = Env(work)
    try:
        run(tap, env, work, logdir)
    except Exception:
        tap.ok(False, "the test ran to its end", traceback.format_exc())
        for name in ("daemon.log", "cockpit-ws-root.log", "cockpit-ws-nobody.log", "chromium.log"):
            p = os.path.join(work, name)
            if os.path.exists(p):
                log(f"---- {name} (last lines)")
                log("".join(open(p, errors="replace").readlines()[-30:]))
        if env.browser:
            try:
                env.browser.screenshot(os.path.join(logdir, "cockpit-page-failure.png"))
                log("screenshot of the failure: " + os.path.join(logdir, "cockpit-page-failure.png"))
            except Exception:
                pass
    finally:
        env.stop()
        shutil.rmtree(work, ignore_errors=True)
    print(f"1..{tap.n}")
    return 1 if tap.failed else 0


def run(tap, env, work, logdir):
    env.start_bus()
    env.start_daemon()
    env.base = env.start_cockpit()
    log(f"cockpit-ws on {env.base}, bus {env.env['DBUS_SYSTEM_BUS_ADDRESS']}")

    big = os.path.join(work, "big.img")
    small = os.path.join(work, "small.qcow2")
    make_image(big, 128)
    make_image(small, 16, "qcow2", data_mib=8)

    def create(method, *args, **options):
        """A job created outside the page, with busctl; its object path."""
        sig = {"Backup": "ssa{sv}", "Mirror": "ssa{sv}", "Commit": "sa{sv}", "Stream": "sa{sv}"}[method]
        opts = []
        for k, v in options.items():
            k = k.replace("_", "-")
            t = "b" if isinstance(v, bool) else "t" if isinstance(v, int) else "s"
            opts += [k, t, str(v).lower() if isinstance(v, bool) else str(v)]
        r = env.busctl("call", NAME, MANAGER, MANAGER_IFACE, method, sig, *args, str(len(options)), *opts)
        return json.loads(r.stdout.split(" ", 1)[1])

    def job_path(job_id):
        r = env.busctl("call", NAME, MANAGER, MANAGER_IFACE, "GetJob", "s", job_id, check=False)
        return json.loads(r.stdout.split(" ", 1)[1]) if r.returncode == 0 else None

    def wait_daemon(what, cond):
        deadline = time.monotonic() + WAIT
        while True:
            v = cond()
            if v:
                return v
            if time.monotonic() > deadline:
                raise cdp.CDPError(f"timed out waiting for the daemon: {what}")
            b.pump(0.1)

    b = env.browser = cdp.Browser(work, lambda m: log("browser: " + m))
    page = env.base + "/cockpit/@localhost/blockjobd/index.html"
    b.navigate(page)
    b.wait("document.body && document.body.getAttribute('data-loaded') === 'true'", WAIT, "the page to load its jobs")
    b.eval(PAGE_JS)
    tap.ok(b.eval("document.querySelectorAll('#job-rows tr').length") == 0 and
           not b.eval("document.getElementById('no-jobs').hidden") and
           b.eval("getComputedStyle(document.getElementById('start-dialog')).display") == "none",
           "the page loads, says there are no jobs, and shows no dialog")

    # ---- jobs created outside the page appear, with live progress ----
    running = create("Backup", big, os.path.join(work, "t1.qcow2"), job_id="outside", speed=MIB,
                     format="qcow2", auto_dismiss=False)
    b.wait("!!t.row('outside')", WAIT, "the job created with busctl to appear")
    texts = b.eval("t.text('outside')")
    tap.ok(big in texts and os.path.join(work, "t1.qcow2") in texts and "Backup" in texts,
           "a job created with busctl appears with its type, source and target", texts)
    first = b.wait("(p => p > 0 ? p : false)(t.percent('outside'))", WAIT, "progress to show")
    later = b.wait(f"(p => p > {first} ? p : false)(t.percent('outside'))", WAIT, "progress to move")
    total = env.prop(running, "TotalProgress")
    facts = b.eval("t.facts('outside')")
    tap.ok(later > first and "128\u00a0MiB" in facts and total == 128 * MIB,
           f"its progress moves live on the page ({first}% then {later}%; daemon total {total})", facts)
    rate = b.wait("(f => f.includes('/s') && f.includes('left') ? f : false)(t.facts('outside'))", WAIT,
                  "rate and ETA")
    tap.ok("/s" in rate, "the page shows the rate and what is left: " + rate)

    def buttons_follow(job_id, path):
        status = env.prop(path, "Status")
        allowed = env.prop(path, "AllowedVerbs")
        want = expected_buttons(allowed, status)
        got = b.wait(f"(v => JSON.stringify(v) === '{json.dumps(want, separators=(',', ':'))}' ? v : false)(t.verbs('{job_id}'))",
                     WAIT, f"{job_id}'s buttons to be {want}")
        return got == want, f"{status}: AllowedVerbs {allowed}, buttons {got}"

    ok, detail = buttons_follow("outside", running)
    tap.ok(ok, "a running job's buttons are those AllowedVerbs names: " + detail, detail)

    # ---- Pause, Resume, SetSpeed, Cancel and Dismiss from the page ----
    b.eval("t.click('outside', 'Pause')")
    b.wait("t.status('outside') === 'paused'", WAIT, "the page to show paused")
    tap.ok(env.prop(running, "Status") == "paused", "Pause on the page pauses the job in the daemon")
    ok, detail = buttons_follow("outside", running)
    tap.ok(ok and "Resume" in detail and "Pause" not in detail.split("buttons")[1],
           "a paused job offers Resume, not Pause: " + detail, detail)

    b.eval("t.click('outside', 'Resume')")
    b.wait("t.status('outside') === 'running'", WAIT, "the page to show running")
    tap.ok(env.prop(running, "Status") == "running", "Resume on the page resumes the job in the daemon")

    # Slower than before, so that the job is surely still running when the page cancels it.
    b.eval("t.set('#job-rows tr[data-job-id=\"outside\"] input[data-speed]', '0.5')")
    b.eval("t.click('outside', 'SetSpeed')")
    wait_daemon("Speed 0.5 MiB/s", lambda: env.prop(running, "Speed") == MIB // 2)
    shown = b.wait("(v => v === '0.5' ? v : false)(t.row('outside').querySelector('input[data-speed]').value)",
                   WAIT, "the speed field to show the daemon's new speed")
    tap.ok(shown == "0.5", "SetSpeed from the page sets the daemon's Speed (0.5 MiB/s)")

    b.eval("t.set('#job-rows tr[data-job-id=\"outside\"] input[data-speed]', '-1')")
    b.eval("t.click('outside', 'SetSpeed')")
    msg = b.wait("t.message('outside')", WAIT, "the page to refuse a negative speed")
    tap.ok(env.prop(running, "Speed") == MIB // 2 and "MiB/s" in msg,
           "a negative speed is refused on the page, next to the job, and the daemon's is unchanged", msg)

    b.eval("t.click('outside', 'Cancel')")
    b.wait("t.status('outside') === 'concluded'", WAIT, "the page to show the job concluded")
    label = b.wait("(l => l === 'Cancelled' ? l : false)(t.label('outside'))", WAIT, "Cancelled")
    text = b.wait("(x => x.includes('Operation canceled') ? x : false)(t.text('outside'))", WAIT,
                  "the error to show")
    tap.ok(env.prop(running, "Status") == "concluded" and env.prop(running, "Error") == "Operation canceled" and
           not os.path.exists(os.path.join(work, "t1.qcow2")) and label == "Cancelled",
           "Cancel on the page cancels the job: the daemon says concluded, \"Operation canceled\", no target", text)
    ok, detail = buttons_follow("outside", running)
    tap.ok(ok and detail.endswith("['Dismiss']"), "a concluded job offers only Dismiss: " + detail, detail)

    b.eval("t.click('outside', 'Dismiss')")
    b.wait("!t.row('outside')", WAIT, "the dismissed job to go")
    tap.ok(job_path("outside") is None, "Dismiss on the page removes the job from the daemon (GetJob: NoSuchJob)")

    # ---- a job dismissed outside the page disappears from it ----
    create("Backup", small, os.path.join(work, "t2.qcow2"), job_id="quick", auto_dismiss=False)
    b.wait("t.label('quick') === 'Completed'", WAIT, "the quick job to show Completed")
    env.busctl("call", NAME, job_path("quick"), JOB_IFACE, "Dismiss")
    b.wait("!t.row('quick')", WAIT, "the job dismissed with busctl to go")
    tap.ok(True, "a job that completes shows Completed until dismissed, and goes when dismissed with busctl")

    # ---- Complete on a mirror at ready ----
    mirror = create("Mirror", small, os.path.join(work, "m.qcow2"), job_id="mirror", auto_dismiss=False)
    b.wait("t.status('mirror') === 'ready'", WAIT, "the mirror to show ready")
    ok, detail = buttons_follow("mirror", mirror)
    tap.ok(ok and "Complete" in detail.split("buttons")[1], "a mirror at ready offers Complete: " + detail, detail)
    b.eval("t.click('mirror', 'Complete')")
    b.wait("t.label('mirror') === 'Completed'", WAIT, "the mirror to show Completed")
    r = qemu_img("compare", small, os.path.join(work, "m.qcow2"))
    tap.ok(env.prop(mirror, "Status") == "concluded" and env.prop(mirror, "Error") == "" and r.returncode == 0,
           "Complete on the page completes the mirror: concluded without error, qemu-img compare finds the "
           "target identical", r.stdout + r.stderr)
    b.eval("t.click('mirror', 'Dismiss')")
    b.wait("!t.row('mirror')", WAIT, "the mirror to go")

    # ---- Finalize on a job that waits for it ----
    pending = create("Backup", small, os.path.join(work, "f.qcow2"), job_id="waits", auto_finalize=False,
                     auto_dismiss=False)
    b.wait("t.status('waits') === 'pending'", WAIT, "the job to show pending")
    ok, detail = buttons_follow("waits", pending)
    tap.ok(ok and "Finalize" in detail.split("buttons")[1], "a pending job offers Finalize: " + detail, detail)
    b.eval("t.click('waits', 'Finalize')")
    b.wait("t.label('waits') === 'Completed'", WAIT, "the finalized job to show Completed")
    r = qemu_img("compare", small, os.path.join(work, "f.qcow2"))
    tap.ok(env.prop(pending, "Status") == "concluded" and env.prop(pending, "Error") == "" and r.returncode == 0,
           "Finalize on the page publishes the backup: concluded without error, qemu-img compare finds the "
           "target identical", r.stdout + r.stderr)
    b.eval("t.click('waits', 'Dismiss')")
    b.wait("!t.row('waits')", WAIT, "the finalized job to go")

    # ---- the start dialog ----
    # By keyboard: focus "Start job" and press Enter, as someone without a mouse does.
    b.eval("document.getElementById('start-job').focus(), true")
    b.key("Enter")
    b.wait("document.getElementById('start-dialog').open", WAIT, "the dialog to open with Enter")
    tap.ok(b.eval("document.activeElement.id") == "f-type", "Enter on \"Start job\" opens the dialog, focus in it")

    jobs_before = env.prop(MANAGER, "Jobs", MANAGER_IFACE)
    b.eval("t.set('#f-type', 'backup')")
    b.eval("t.set('#f-source', 'disk.img')")
    b.eval("t.set('#f-target', '" + os.path.join(work, "never.qcow2") + "')")
    b.eval("document.getElementById('start-submit').click(), true")
    err = b.wait("document.getElementById('f-source-error').textContent", WAIT, "the dialog to refuse a relative path")
    tap.ok(b.eval("document.getElementById('start-dialog').open") and
           env.prop(MANAGER, "Jobs", MANAGER_IFACE) == jobs_before and "absolute" in err,
           "the dialog checks the paths before calling: a relative source is refused, no job made", err)

    missing = os.path.join(work, "no-such-dir", "missing.qcow2")
    b.eval(f"t.set('#f-source', '{missing}')")
    b.eval("document.getElementById('start-submit').click(), true")
    shown = b.wait("(e => !e.hidden && e.textContent)(document.getElementById('start-error'))", WAIT,
                   "the daemon's refusal to show")
    r = env.busctl("call", NAME, MANAGER, MANAGER_IFACE, "Backup", "ssa{sv}", missing,
                   os.path.join(work, "never.qcow2"), "0", check=False)
    daemon_says = r.stderr.strip().removeprefix("Call failed: ")
    tap.ok(r.returncode != 0 and daemon_says in shown and "Image problem" in shown,
           "a Backup of a source that does not exist shows the daemon's message in the dialog",
           f"page: {shown}\ndaemon: {daemon_says}")

    target = os.path.join(work, "from-page.qcow2")
    b.eval(f"t.set('#f-source', '{small}')")
    b.eval(f"t.set('#f-target', '{target}')")
    b.eval("t.set('#f-format', 'qcow2')")
    b.eval("t.set('#f-job-id', 'from-page')")
    b.eval("document.getElementById('start-error').hidden = true")
    b.screenshot(os.path.join(logdir, "cockpit-dialog.png"))
    b.eval("document.getElementById('start-submit').click(), true")
    b.wait("!document.getElementById('start-dialog').open", WAIT, "the dialog to close")
    b.wait("getComputedStyle(document.getElementById('start-dialog')).display === 'none'", WAIT,
           "the closed dialog to be out of sight")
    b.wait("t.label('from-page') === 'Completed'", WAIT, "the backup from the dialog to complete")
    path = job_path("from-page")
    r = qemu_img("compare", small, target)
    info = json.loads(qemu_img("info", "--output=json", target).stdout or "{}")
    tap.ok(path and env.prop(path, "Status") == "concluded" and env.prop(path, "Error") == "" and
           r.returncode == 0 and info.get("format") == "qcow2",
           "a Backup started from the dialog makes a qcow2 target that qemu-img compare finds identical",
           r.stdout + r.stderr)
    b.eval("t.click('from-page', 'Dismiss')")
    b.wait("!t.row('from-page')", WAIT, "the dialog's job to go")

    # ---- an incremental backup from the dialog, with a bitmap it offers ----
    inc = os.path.join(work, "inc.qcow2")
    for cmd in (["qemu-img", "create", "-q", "-f", "qcow2", inc, "16M"],
                ["qemu-img", "bitmap", "--add", inc, "b0"],
                ["qemu-io", "-c", "write -P 0x11 1M 1M", inc]):
        subprocess.run(cmd, check=True, capture_output=True, timeout=120)
    b.eval("document.getElementById('start-job').click(), true")
    b.wait("document.getElementById('start-dialog').open", WAIT, "the dialog to open")
    b.eval("t.set('#f-type', 'backup')")
    b.eval(f"t.set('#f-source', '{inc}')")
    offered = b.wait("[...document.querySelectorAll('#f-bitmaps option')].map(o => o.value).join(',')", WAIT,
                     "the source's bitmaps to be offered")
    tap.ok(offered == "b0", "the dialog offers the source's bitmaps (ListBitmaps): " + offered, offered)
    inc_target = os.path.join(work, "inc-target.qcow2")
    b.eval(f"t.set('#f-target', '{inc_target}')")
    b.eval("t.set('#f-sync', 'incremental')")
    b.eval("t.set('#f-bitmap', 'b0')")
    b.eval("t.set('#f-job-id', 'incremental')")
    b.eval("document.getElementById('start-submit').click(), true")
    b.wait("!document.getElementById('start-dialog').open", WAIT, "the dialog to close")
    b.wait("t.label('incremental') === 'Completed'", WAIT, "the incremental backup to complete")
    path = job_path("incremental")
    copied = env.prop(path, "TotalProgress")
    error = env.prop(path, "Error")
    # A concluded job holds its source (QEMU's locks) until it is dismissed.
    b.eval("t.click('incremental', 'Dismiss')")
    b.wait("!t.row('incremental')", WAIT, "the incremental backup to go")
    r = env.busctl("-j", "call", NAME, MANAGER, MANAGER_IFACE, "ListBitmaps", "s", inc)
    bitmaps = json.loads(r.stdout)["data"][0]
    tap.ok(error == "" and [bm[0] for bm in bitmaps] == ["b0"] and bitmaps[0][2] == 0 and
           copied == MIB and os.path.exists(inc_target),
           f"an incremental backup from the dialog copies what b0 marks ({copied} bytes) and clears it "
           f"(ListBitmaps: {bitmaps})", bitmaps)

    # ---- screenshots with running jobs, in Cockpit's shell ----
    create("Backup", big, os.path.join(work, "nightly.qcow2"), job_id="nightly", speed=MIB // 2, format="qcow2")
    weekly = create("Backup", big, os.path.join(work, "weekly.raw"), job_id="weekly", speed=MIB)
    create("Mirror", small, os.path.join(work, "vm-disk.qcow2"), job_id="vm-disk")
    env.busctl("call", NAME, weekly, JOB_IFACE, "Pause")
    b.wait("t.status('weekly') === 'paused' && t.status('vm-disk') === 'ready' && "
           "t.facts('nightly').includes('left')", WAIT, "the jobs for the screenshot")
    b.set_size(1400, 760)
    b.navigate(env.base + "/blockjobd")
    frame = "document.querySelector(\"iframe[name='cockpit1:localhost/blockjobd']\")"
    b.wait(f"(f => f && f.contentDocument && f.contentDocument.body && "
           f"f.contentDocument.body.getAttribute('data-loaded') === 'true' && "
           f"f.contentDocument.querySelectorAll('#job-rows tr').length === 3 && "
           f"f.contentDocument.querySelector('#job-rows tr[data-job-id=\"nightly\"] .job-progress-facts').textContent.includes('left') && "
           f"[...f.contentDocument.querySelectorAll('[data-owner-uid]')].every(e => e.textContent === 'root'))({frame})",
           WAIT, "the page in Cockpit's shell")
    shot = os.path.join(logdir, "cockpit-page.png")
    b.screenshot(shot)
    tap.ok(os.path.getsize(shot) > 10000, "a screenshot of the page in Cockpit with running jobs: " + shot)

    b.set_size(420, 900)
    b.navigate(page)
    b.wait("document.body && document.body.getAttribute('data-loaded') === 'true' && "
           "document.querySelectorAll('#job-rows tr').length === 3", WAIT, "the page in a narrow window")
    b.eval(PAGE_JS)
    narrow = b.eval("[document.documentElement.scrollWidth, window.innerWidth, "
                    "getComputedStyle(document.querySelector('#jobs thead')).display]")
    shot = os.path.join(logdir, "cockpit-page-narrow.png")
    b.screenshot(shot)
    tap.ok(narrow[0] <= narrow[1] and narrow[2] == "none",
           f"in a narrow window the table becomes a list and nothing sticks out ({narrow}): {shot}", narrow)


    # ---- a user without administrative access ----
    # cockpit-ws and its bridge as nobody: Cockpit's superuser bridge is not open to it, so
    # cockpit.permission() says no, and the page shows the jobs with "Not authorized".
    b.set_size(1400, 900)
    b.navigate(env.start_cockpit("nobody") + "/cockpit/@localhost/blockjobd/index.html")
    b.wait("document.body && document.body.getAttribute('data-loaded') === 'true' && "
           "document.querySelectorAll('#job-rows tr').length === 3 && !!document.getElementById('not-authorized')",
           WAIT, "the page as nobody")
    b.eval(PAGE_JS)
    seen = b.eval("[document.querySelectorAll('#job-rows button[data-verb], #job-rows input').length, "
                  "[...document.querySelectorAll('#job-rows tr')].map(r => r.querySelector('.job-not-authorized').textContent), "
                  "document.getElementById('start-job').hidden, t.status('weekly'), t.percent('vm-disk')]")
    shot = os.path.join(logdir, "cockpit-page-not-authorized.png")
    b.screenshot(shot)
    tap.ok(seen[0] == 0 and seen[1] == ["Not authorized"] * 3 and seen[2] is True and seen[3] == "paused" and
           seen[4] == 100, "without administrative access the page shows the jobs and \"Not authorized\" "
           "instead of buttons: " + shot, seen)
    r = subprocess.run(["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", "--",
                        "busctl", "--system", "call", NAME, weekly, JOB_IFACE, "Resume"],
                       env=env.env, capture_output=True, text=True, timeout=60)
    tap.ok(r.returncode != 0 and any(w in r.stderr.lower() for w in ("denied", "authoriz")) and
           env.prop(weekly, "Status") == "paused",
           "and the daemon indeed refuses nobody's verbs: " + r.stderr.strip(), r.stderr)

    # The daemon stops cleanly (SIGTERM cancels what runs); under ASan, a finding would fail it here.
    os.killpg(env.daemon.pid, signal.SIGTERM)
    rc = env.daemon.wait(timeout=WAIT)
    tail = "".join(open(os.path.join(work, "daemon.log"), errors="replace").readlines()[-40:])
    tap.ok(rc == 0, f"blockjobd exits with status 0 at SIGTERM (status {rc})", tail)


if __name__ == "__main__":
    sys.exit(main())
