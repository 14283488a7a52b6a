/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * blockjobd's Cockpit page: the jobs of org.blockjobd.Jobs1 (dbus/org.blockjobd.Jobs1.xml), live
 * from the daemon's signals through cockpit.dbus() (the bridge's ObjectManager watch: the job
 * objects' InterfacesAdded/Removed and PropertiesChanged, and StatusChanged/IoError); nothing is
 * polled. Plain JavaScript on Cockpit's own cockpit.js: no bundler, no framework.
 */
"use strict";

(function () {
    const _ = cockpit.gettext;

    const SERVICE = "org.blockjobd.Jobs1";
    const MANAGER_PATH = "/org/blockjobd/Jobs1";
    const MANAGER_IFACE = "org.blockjobd.Jobs1.Manager";
    const JOB_IFACE = "org.blockjobd.Jobs1.Job";
    const MIB = 1024 * 1024;

    /* The verbs, in the order their buttons appear: the job's method, the name AllowedVerbs gives
     * it (QEMU's verb names), and the button's text. */
    const VERBS = [
        ["Pause", "pause", _("Pause")],
        ["Resume", "resume", _("Resume")],
        ["Complete", "complete", _("Complete")],
        ["Finalize", "finalize", _("Finalize")],
        ["Cancel", "cancel", _("Cancel")],
        ["Dismiss", "dismiss", _("Dismiss")],
    ];


    const STATUS_TEXT = {
        created: _("Created"),
        running: _("Running"),
        paused: _("Paused"),
        ready: _("Ready"),
        standby: _("Standby"),
        waiting: _("Waiting"),
        pending: _("Pending"),
        aborting: _("Aborting"),
        concluded: _("Concluded"),
        null: _("Gone"),
    };

    const TYPE_TEXT = {
        backup: _("Backup"),
        mirror: _("Mirror"),
        commit: _("Commit"),
        stream: _("Stream"),
    };

    /* What a daemon error means, in words; the daemon's own message follows. */
    const ERROR_TEXT = {
        "org.freedesktop.DBus.Error.AccessDenied": _("Not authorized"),
        "org.freedesktop.DBus.Error.InteractiveAuthorizationRequired": _("Not authorized without authentication"),
        "org.freedesktop.DBus.Error.InvalidArgs": _("Invalid request"),
        "org.freedesktop.DBus.Error.ServiceUnknown": _("blockjobd is not available"),
        "org.blockjobd.Jobs1.Error.InvalidState": _("Not possible now"),
        "org.blockjobd.Jobs1.Error.NoSuchJob": _("The job is gone"),
        "org.blockjobd.Jobs1.Error.JobExists": _("The job ID is taken"),
        "org.blockjobd.Jobs1.Error.InvalidJobId": _("Invalid job ID"),
        "org.blockjobd.Jobs1.Error.ImageError": _("Image problem"),
        "org.blockjobd.Jobs1.Error.ImageInUse": _("Image in use"),
        "org.blockjobd.Jobs1.Error.BitmapError": _("Bitmap problem"),
        "org.blockjobd.Jobs1.Error.ShuttingDown": _("blockjobd is stopping"),
        "org.blockjobd.Jobs1.Error.LimitExceeded": _("Limit reached"),
    };

    function errorText(ex) {
        const what = ERROR_TEXT[ex.name];
        const message = ex.message || cockpit.message(ex);
        return what ? cockpit.format("$0: $1", what, message) : message;
    }

    function isAccessDenied(ex) {
        return ex && (ex.name === "org.freedesktop.DBus.Error.AccessDenied" ||
                      ex.name === "org.freedesktop.DBus.Error.InteractiveAuthorizationRequired" ||
                      ex.problem === "access-denied");
    }

    function formatBytes(n) {
        const units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
        let i = 0;
        while (n >= 1024 && i < units.length - 1) {
            n /= 1024;
            i++;
        }
        return (i === 0 ? String(n) : n.toFixed(n < 10 ? 1 : 0)) + "\u00a0" + units[i];
    }

    function formatDuration(seconds) {
        seconds = Math.round(seconds);
        const h = Math.floor(seconds / 3600);
        const m = Math.floor(seconds / 60) % 60;
        const s = seconds % 60;
        if (h > 0)
            return cockpit.format(_("$0 h $1 min"), h, m);
        if (m > 0)
            return cockpit.format(_("$0 min $1 s"), m, s);
        return cockpit.format(_("$0 s"), s);
    }

    function el(tag, attrs, ...children) {
        const e = document.createElement(tag);
        for (const [k, v] of Object.entries(attrs || {})) {
            if (v === undefined || v === null || v === false)
                continue;
            if (k === "text")
                e.textContent = v;
            else if (k.startsWith("on"))
                e.addEventListener(k.substring(2), v);
            else
                e.setAttribute(k, v === true ? "" : v);
        }
        for (const c of children) {
            if (c !== null && c !== undefined)
                e.append(c);
        }
        return e;
    }

    /* ---- state ------------------------------------------------------------------------------ */

    const client = cockpit.dbus(SERVICE, { bus: "system", superuser: "try" });
    const jobs = client.proxies(JOB_IFACE, MANAGER_PATH);
    const permission = cockpit.permission({ admin: true });

    /* Per job object path: what the proxy does not carry. */
    const extra = {};
    const owners = {};

    function jobExtra(path) {
        if (!extra[path])
            extra[path] = { source: null, target: null, error: null, message: null, ioError: null, speedDraft: null };
        return extra[path];
    }

    function mayAct() {
        /* null while unknown: act, and let the daemon say no. */
        return permission.allowed !== false;
    }

    /* InterfacesAdded, which goes to everyone, carries Source and Target empty (and Error as the
     * system's text only): read them as this user may, once, and Error again when it changes. */
    function readPaths(path) {
        const x = jobExtra(path);
        client.call(path, "org.freedesktop.DBus.Properties", "GetAll", [JOB_IFACE])
                .then(([props]) => {
                    x.source = props.Source ? props.Source.v : "";
                    x.target = props.Target ? props.Target.v : "";
                    x.error = props.Error ? props.Error.v : "";
                    render(path);
                })
                .catch(() => {}); /* the job went away meanwhile: InterfacesRemoved follows */
    }

    function readError(path) {
        client.call(path, "org.freedesktop.DBus.Properties", "Get", [JOB_IFACE, "Error"])
                .then(([value]) => {
                    jobExtra(path).error = value.v;
                    render(path);
                })
                .catch(() => {});
    }

    function ownerName(uid) {
        if (owners[uid] === undefined) {
            owners[uid] = null;
            cockpit.spawn(["getent", "passwd", String(uid)], { err: "ignore" })
                    .then(out => {
                        owners[uid] = out.split(":")[0] || String(uid);
                        document.querySelectorAll("[data-owner-uid='" + uid + "']")
                                .forEach(e => { e.textContent = owners[uid] });
                    })
                    .catch(() => { owners[uid] = String(uid) });
        }
        return owners[uid] || String(uid);
    }

    /* ---- the table ---------------------------------------------------------------------------- */

    function rowOf(path) {
        return document.querySelector("#job-rows tr[data-path='" + CSS.escape(path) + "']");
    }

    function statusCell(job, x) {
        const cell = el("div", { class: "job-status" });
        let labelClass = "pf-c-label";
        let text = STATUS_TEXT[job.Status] || job.Status;
        if (job.Status === "concluded") {
            if (x.error || job.Error) {
                labelClass += " pf-m-red";
                text = x.error === "Operation canceled" || job.Error === "Operation canceled" ? _("Cancelled") : _("Failed");
            } else {
                labelClass += " pf-m-green";
                text = _("Completed");
            }
        } else if (job.Status === "ready" || job.Status === "pending") {
            labelClass += " pf-m-blue";
        } else if (job.Status === "paused" || job.Status === "standby") {
            labelClass += " pf-m-orange";
        }
        cell.append(el("span", { class: labelClass, "data-status": job.Status },
                       el("span", { class: "pf-c-label__content", text })));
        if (job.IoStatus && job.IoStatus !== "ok")
            cell.append(el("div", { class: "job-io-status", text: cockpit.format(_("I/O error: $0"), job.IoStatus) }));
        return cell;
    }

    function progressCell(job) {
        const total = job.TotalProgress || 0;
        const current = job.CurrentProgress || 0;
        const percent = total > 0 ? Math.min(100, Math.floor(current * 100 / total)) : (job.Status === "concluded" ? 100 : 0);
        const label = cockpit.format(_("Progress of job $0"), job.Id);
        /* Through the CSSOM: Cockpit's Content-Security-Policy forbids style attributes. */
        const indicator = el("div", { class: "pf-c-progress__indicator" });
        indicator.style.width = percent + "%";
        const cell = el("div", { class: "job-progress" },
                        el("div", { class: "pf-c-progress pf-m-sm pf-m-singleline" + (job.Error ? " pf-m-danger" : "") },
                           el("div", { class: "pf-c-progress__status", "aria-hidden": "true" },
                              el("span", { class: "pf-c-progress__measure", text: percent + "%" })),
                           el("div", {
                               class: "pf-c-progress__bar",
                               role: "progressbar",
                               "aria-valuemin": "0",
                               "aria-valuemax": "100",
                               "aria-valuenow": String(percent),
                               "aria-label": label,
                           }, indicator)));
        const facts = [cockpit.format(_("$0 of $1"), formatBytes(current), formatBytes(total))];
        /* The daemon's Rate (over its last few seconds); the ETA from it and what is left, so
         * that the browser's clock does not matter. */
        if (job.Rate > 0 && ["running", "ready"].includes(job.Status)) {
            facts.push(cockpit.format(_("$0/s"), formatBytes(job.Rate)));
            if (total > current && job.Status === "running")
                facts.push(cockpit.format(_("$0 left"), formatDuration((total - current) / job.Rate)));
        }
        cell.append(el("div", { class: "job-progress-facts", text: facts.join(" · ") }));
        return cell;
    }

    function callVerb(path, verb, args) {
        const x = jobExtra(path);
        x.message = null;
        x.busy = verb;
        render(path);
        return client.call(path, JOB_IFACE, verb, args || [])
                .then(() => {
                    x.busy = null;
                    x.message = null;
                    if (rowOf(path))
                        render(path);
                })
                .catch(ex => {
                    x.busy = null;
                    x.message = errorText(ex);
                    if (isAccessDenied(ex))
                        x.denied = true;
                    if (rowOf(path))
                        render(path);
                });
    }

    function actionsCell(path, job, x) {
        const cell = el("div", { class: "job-actions" });
        const allowed = job.AllowedVerbs || [];
        if (!mayAct()) {
            cell.append(el("span", { class: "job-not-authorized", text: _("Not authorized") }));
            return cell;
        }
        const buttons = el("div", { class: "job-buttons" });
        for (const [verb, name, text] of VERBS) {
            if (!allowed.includes(name))
                continue;
            const danger = verb === "Cancel";
            buttons.append(el("button", {
                type: "button",
                class: "pf-c-button pf-m-small " + (danger ? "pf-m-danger" : "pf-m-secondary"),
                "data-verb": verb,
                disabled: x.busy ? true : undefined,
                "aria-label": cockpit.format("$0 $1", text, job.Id),
                onclick: () => callVerb(path, verb),
            }, text));
        }
        cell.append(buttons);
        if (allowed.includes("set-speed")) {
            const inputId = "speed-" + path.replace(/[^A-Za-z0-9]/g, "_");
            const input = el("input", {
                class: "pf-c-form-control",
                type: "number",
                min: "0",
                step: "any",
                id: inputId,
                "data-speed": true,
                value: x.speedDraft !== null ? x.speedDraft : String(job.Speed / MIB),
                oninput: ev => { x.speedDraft = ev.target.value },
            });
            const set = () => {
                const mib = Number(input.value);
                if (input.value === "" || !isFinite(mib) || mib < 0) {
                    x.message = _("The speed limit is a number of MiB/s, 0 for none");
                    render(path);
                    return;
                }
                x.speedDraft = null;
                callVerb(path, "SetSpeed", [Math.round(mib * MIB)]);
            };
            input.addEventListener("keydown", ev => {
                if (ev.key === "Enter") {
                    ev.preventDefault();
                    set();
                }
            });
            cell.append(el("div", { class: "job-speed" },
                           el("label", { for: inputId, text: _("Limit (MiB/s, 0: none)") }),
                           el("div", { class: "pf-c-input-group" },
                              input,
                              el("button", {
                                  type: "button",
                                  class: "pf-c-button pf-m-control",
                                  "data-verb": "SetSpeed",
                                  disabled: x.busy ? true : undefined,
                                  "aria-label": cockpit.format(_("Set the speed limit of $0"), job.Id),
                                  onclick: set,
                              }, _("Set")))));
        }
        return cell;
    }

    function render(path) {
        const job = jobs[path];
        if (!job || !job.valid || job.Id === undefined)
            return;
        const x = jobExtra(path);
        let row = rowOf(path);
        const focused = row && row.contains(document.activeElement) ? document.activeElement : null;
        const focusKey = focused ? (focused.getAttribute("data-verb") || (focused.hasAttribute("data-speed") ? "speed" : null)) : null;

        const source = x.source !== null ? x.source : job.Source;
        const target = x.target !== null ? x.target : job.Target;
        const error = x.error || job.Error;

        const cells = [
            el("td", { role: "cell", "data-label": _("Job") }, el("span", { class: "job-id", text: job.Id })),
            el("td", { role: "cell", "data-label": _("Type") }, TYPE_TEXT[job.Type] || job.Type),
            el("td", { role: "cell", "data-label": _("Source → target"), class: "job-files" },
               /* Other users' paths read empty unless polkit lets this user manage their jobs. */
               source ? el("span", { class: "job-source", text: source })
                   : el("span", { class: "job-hidden", text: _("Not shown to you") }),
               target ? el("span", { class: "job-arrow", "aria-hidden": "true", text: " → " }) : null,
               target ? el("span", { class: "job-target", text: target }) : null),
            el("td", { role: "cell", "data-label": _("Status") }, statusCell(job, x)),
            el("td", { role: "cell", "data-label": _("Progress") }, progressCell(job)),
            el("td", { role: "cell", "data-label": _("Owner") },
               el("span", { "data-owner-uid": String(job.OwnerUID), text: ownerName(job.OwnerUID) })),
            el("td", { role: "cell", "data-label": _("Actions") }, actionsCell(path, job, x)),
        ];
        const messages = [];
        if (error)
            messages.push(el("div", { class: "pf-c-helper-text__item pf-m-error job-error" },
                             el("span", { class: "pf-c-helper-text__item-text", text: cockpit.format(_("Error: $0"), error) })));
        if (x.ioError && !error)
            messages.push(el("div", { class: "pf-c-helper-text__item pf-m-warning job-io-error" },
                             el("span", { class: "pf-c-helper-text__item-text", text: x.ioError })));
        if (x.message)
            messages.push(el("div", { class: "pf-c-helper-text__item pf-m-error job-message", role: "alert" },
                             el("span", { class: "pf-c-helper-text__item-text", text: x.message })));

        const newRow = el("tr", { role: "row", "data-path": path, "data-job-id": job.Id, "data-status": job.Status }, ...cells);
        if (messages.length > 0)
            cells[2].append(el("div", { class: "pf-c-helper-text" }, ...messages));

        if (row) {
            row.replaceWith(newRow);
        } else {
            /* Newest first, as ListJobs() orders them: a new job goes on top. */
            document.getElementById("job-rows").prepend(newRow);
        }
        row = newRow;
        if (focusKey) {
            const again = focusKey === "speed" ? row.querySelector("[data-speed]") : row.querySelector("[data-verb='" + focusKey + "']");
            if (again)
                again.focus();
        }
        updateEmpty();
    }

    function removeRow(path) {
        const row = rowOf(path);
        if (row)
            row.remove();
        delete extra[path];
        updateEmpty();
    }

    function updateEmpty() {
        document.getElementById("no-jobs").hidden = document.querySelectorAll("#job-rows tr").length > 0;
    }

    /* ---- alerts ------------------------------------------------------------------------------- */

    function showAlert(id, kind, title, text) {
        const alerts = document.getElementById("alerts");
        let a = document.getElementById(id);
        if (a)
            a.remove();
        a = el("div", { class: "pf-c-alert pf-m-inline pf-m-" + kind, id, role: kind === "danger" ? "alert" : "status" },
               el("p", { class: "pf-c-alert__title", text: title }),
               text ? el("div", { class: "pf-c-alert__description", text }) : null);
        alerts.append(a);
    }

    function clearAlert(id) {
        const a = document.getElementById(id);
        if (a)
            a.remove();
    }

    function updatePermission() {
        const start = document.getElementById("start-job");
        if (!mayAct()) {
            start.hidden = true;
            showAlert("not-authorized", "info", _("Not authorized to start or control jobs"),
                      _("You can see the jobs, but changing them needs administrative access. Turn it on with the \"Administrative access\" button at the top."));
        } else {
            start.hidden = false;
            clearAlert("not-authorized");
        }
        for (const path in jobs)
            render(path);
    }

    /* ---- the start dialog ------------------------------------------------------------------- */

    /* Found once the document is there (init()). */
    let dialog = null;
    const field = id => document.getElementById("f-" + id);

    function typeChanged() {
        const type = field("type").value;
        dialog.querySelectorAll("[data-types]").forEach(e => {
            const shown = e.getAttribute("data-types").split(" ").includes(type);
            e.hidden = !shown;
            if (e.tagName === "OPTION")
                e.disabled = !shown;
        });
        const sync = field("sync");
        if (sync.selectedOptions[0] && sync.selectedOptions[0].disabled)
            sync.value = "full";
        document.getElementById("f-source-label").textContent = (type === "commit" || type === "stream") ? _("Image") : _("Source");
        document.getElementById("f-base-label").textContent = type === "stream" ? _("Base (empty: the image stands alone)") : _("Base (empty: the bottom of the chain)");
        syncChanged();
    }

    function syncChanged() {
        const mode = field("bitmap-mode");
        /* QEMU's rule: incremental is bitmap with on-success. */
        if (field("sync").value === "incremental")
            mode.value = "on-success";
        mode.disabled = field("sync").value === "incremental";
    }

    /* The bitmaps the source has, offered in the bitmap entry (ListBitmaps()). */
    let bitmapsFor = null;
    function sourceChanged() {
        const source = field("source").value.trim();
        const list = document.getElementById("f-bitmaps");
        if (field("type").value !== "backup" || source === bitmapsFor || !source.startsWith("/"))
            return;
        bitmapsFor = source;
        list.replaceChildren();
        client.call(MANAGER_PATH, MANAGER_IFACE, "ListBitmaps", [source])
                .then(([bitmaps]) => {
                    if (bitmapsFor !== source)
                        return;
                    for (const [name, , dirty, flags] of bitmaps) {
                        if (!flags.includes("inconsistent"))
                            list.append(el("option", { value: name, label: cockpit.format(_("$0 ($1 changed)"), name, formatBytes(dirty)) }));
                    }
                })
                .catch(() => {}); /* a raw image, or none yet: no bitmaps to offer */
    }

    function checkPath(id, required) {
        const v = field(id).value.trim();
        if (v === "")
            return required ? _("A path is needed") : null;
        if (!v.startsWith("/"))
            return _("The path must be absolute (start with /)");
        if (v.split("/").some(c => c === "." || c === ".."))
            return _("The path must not contain \".\" or \"..\" components");
        if (new TextEncoder().encode(v).length >= 4096)
            return _("The path is too long");
        return null;
    }

    function validate() {
        const type = field("type").value;
        const errors = {};
        const copy = type === "backup" || type === "mirror";
        errors.source = checkPath("source", true);
        if (copy) {
            errors.target = checkPath("target", true);
            if (!errors.source && !errors.target && field("source").value.trim() === field("target").value.trim())
                errors.target = _("The target must not be the source");
        }
        if (type === "commit")
            errors.top = checkPath("top", false);
        if (type === "commit" || type === "stream")
            errors.base = checkPath("base", false);
        const id = field("job-id").value.trim();
        if (id !== "" && !/^[A-Za-z][A-Za-z0-9._-]{0,127}$/.test(id))
            errors["job-id"] = _("An ID starts with a letter, followed by letters, digits, \"-\", \".\" and \"_\", at most 128 characters");
        const speed = field("speed").value;
        if (speed === "" || !isFinite(Number(speed)) || Number(speed) < 0)
            errors.speed = _("The speed limit is a number of MiB/s, 0 for none");
        if (type === "backup") {
            const sync = field("sync").value;
            const bitmap = field("bitmap").value;
            if ((sync === "bitmap" || sync === "incremental") && bitmap === "")
                errors.bitmap = _("This sync mode needs a bitmap");
            else if (bitmap !== "" && field("bitmap-mode").value === "never" && (sync === "full" || sync === "top"))
                errors.bitmap = _("A bitmap left as it is does nothing with this sync mode");
        }
        let ok = true;
        for (const f of ["source", "target", "top", "base", "job-id", "speed", "bitmap"]) {
            const msg = errors[f] || "";
            document.getElementById("f-" + f + "-error").textContent = msg;
            field(f).setAttribute("aria-invalid", msg ? "true" : "false");
            if (msg && ok) {
                field(f).focus();
                ok = false;
            }
        }
        return ok;
    }

    function startCall() {
        const type = field("type").value;
        const options = {};
        const id = field("job-id").value.trim();
        if (id !== "")
            options["job-id"] = cockpit.variant("s", id);
        const speed = Math.round(Number(field("speed").value) * MIB);
        if (speed > 0)
            options.speed = cockpit.variant("t", speed);
        options["auto-finalize"] = cockpit.variant("b", field("auto-finalize").checked);
        options["auto-dismiss"] = cockpit.variant("b", field("auto-dismiss").checked);
        const source = field("source").value.trim();
        if (type === "backup" || type === "mirror") {
            if (field("format").value)
                options.format = cockpit.variant("s", field("format").value);
            options.sync = cockpit.variant("s", field("sync").value);
            if (field("overwrite").checked)
                options.overwrite = cockpit.variant("b", true);
            if (type === "backup" && field("bitmap").value !== "") {
                options.bitmap = cockpit.variant("s", field("bitmap").value);
                options["bitmap-mode"] = cockpit.variant("s", field("bitmap-mode").value);
            }
            return [type === "backup" ? "Backup" : "Mirror", [source, field("target").value.trim(), options]];
        }
        if (type === "commit" && field("top").value.trim() !== "")
            options.top = cockpit.variant("s", field("top").value.trim());
        if (field("base").value.trim() !== "")
            options.base = cockpit.variant("s", field("base").value.trim());
        return [type === "commit" ? "Commit" : "Stream", [source, options]];
    }

    function submit(ev) {
        ev.preventDefault();
        const error = document.getElementById("start-error");
        error.hidden = true;
        if (!validate())
            return;
        const [method, args] = startCall();
        const button = document.getElementById("start-submit");
        button.disabled = true;
        button.classList.add("pf-m-in-progress");
        client.call(MANAGER_PATH, MANAGER_IFACE, method, args)
                .then(() => dialog.close())
                .catch(ex => {
                    document.getElementById("start-error-text").textContent = errorText(ex);
                    error.hidden = false;
                })
                .finally(() => {
                    button.disabled = false;
                    button.classList.remove("pf-m-in-progress");
                });
    }

    function openDialog() {
        document.getElementById("start-error").hidden = true;
        dialog.querySelectorAll(".pf-m-error.pf-c-form__helper-text").forEach(e => { e.textContent = "" });
        typeChanged();
        dialog.showModal();
        field("type").focus();
    }

    /* ---- start ------------------------------------------------------------------------------- */

    function init() {
        cockpit.translate();
        dialog = document.getElementById("start-dialog");
        document.getElementById("start-job").addEventListener("click", openDialog);
        document.getElementById("start-cancel").addEventListener("click", () => dialog.close());
        document.getElementById("start-form").addEventListener("submit", submit);
        field("type").addEventListener("change", typeChanged);
        field("sync").addEventListener("change", syncChanged);
        field("source").addEventListener("change", sourceChanged);
        typeChanged();

        permission.addEventListener("changed", updatePermission);
        updatePermission();

        jobs.addEventListener("added", (ev, proxy) => {
            readPaths(proxy.path);
            render(proxy.path);
        });
        jobs.addEventListener("changed", (ev, proxy) => {
            const x = jobExtra(proxy.path);
            if (proxy.Error && proxy.Error !== x.errorSeen) {
                x.errorSeen = proxy.Error;
                readError(proxy.path);
            }
            render(proxy.path);
        });
        jobs.addEventListener("removed", (ev, proxy) => removeRow(proxy.path));

        client.subscribe({ interface: JOB_IFACE, member: "StatusChanged" }, (path, iface, signal, [id, status]) => {
            /* "null": the object goes; InterfacesRemoved follows. Mark the row until then. */
            const row = rowOf(path);
            if (row)
                row.setAttribute("data-status", status);
        });
        client.subscribe({ interface: JOB_IFACE, member: "IoError" }, (path, iface, signal, [operation, action, message]) => {
            jobExtra(path).ioError = cockpit.format(_("I/O error on $0 ($1): $2"), operation, action, message);
            render(path);
        });

        jobs.wait(() => {
            for (const path in jobs) {
                readPaths(path);
                render(path);
            }
            document.body.setAttribute("data-loaded", "true");
            updateEmpty();
        });

        client.addEventListener("close", (ev, options) => {
            showAlert("disconnected", "danger", _("blockjobd cannot be reached"), cockpit.message(options));
        });
        client.addEventListener("owner", (ev, owner) => {
            if (owner === null)
                showAlert("disconnected", "warning", _("blockjobd is not running"),
                          _("It starts when a job is started."));
            else
                clearAlert("disconnected");
        });
    }

    document.addEventListener("DOMContentLoaded", init);
}());
