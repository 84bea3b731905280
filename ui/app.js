// SPDX-License-Identifier: GPL-2.0-or-later
// Ferry's web UI: plain JavaScript, no build step (ARCHITECTURE.md, Web UI).
// Every datum comes from /api with the user's token; the page redraws what
// the engine's event stream (/api/events/stream) says changed.
"use strict";

const TOKEN_KEY = "ferry.token";
const CHUNK = 8 * 1024 * 1024;          // the agent's transfer_max_request
const MiB = 1024 * 1024, GiB = 1024 * MiB;

const S = { token: sessionStorage.getItem(TOKEN_KEY), user: null, role: null, stream: null, view: null,
            refreshing: false, again: false, lists: {} };

// ---- DOM helpers: text goes in as text, never as markup ----
function h(tag, attrs, ...kids) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "text") el.textContent = v;
    else el.setAttribute(k, v === true ? "" : v);
  }
  for (const k of kids.flat()) if (k !== null && k !== undefined && k !== false)
    el.append(k instanceof Node ? k : String(k));
  return el;
}
const $ = (sel) => document.querySelector(sel);
function say(msg, bad) {
  const s = $("#status");
  s.textContent = msg;
  s.className = bad ? "error" : "";
}
const can = (role) => ({ viewer: 0, operator: 1, admin: 2 })[S.role] >= ({ viewer: 0, operator: 1, admin: 2 })[role];
function size(n) {
  if (n === null || n === undefined) return "";
  const u = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < u.length - 1) { n /= 1024; i++; }
  return `${n.toFixed(i ? 1 : 0)} ${u[i]}`;
}
const time = (t) => (t ? new Date(t * 1000).toLocaleString() : "");
function dur(a, b) {
  if (!a) return "";
  const s = Math.max(0, Math.round((b || Date.now() / 1000) - a));
  return s < 120 ? `${s} s` : `${Math.floor(s / 60)} min ${s % 60} s`;
}

// ---- the API ----
class ApiError extends Error {
  constructor(status, detail) { super(detail); this.status = status; }
}
async function api(method, path, body) {
  const headers = { Accept: "application/json" };
  if (S.token) headers.Authorization = `Bearer ${S.token}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const r = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  const text = await r.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch (e) { data = null; }
  if (r.status === 401 && S.token) { logout("Your session ended: log in again."); }
  if (!r.ok) throw new ApiError(r.status, (data && data.fault && data.fault.detail) || `${r.status} ${r.statusText}`);
  return data;
}
const get = (p) => api("GET", p);

// An action: runs fn, says what happened, redraws.
async function act(what, fn) {
  say(`${what}…`);
  try {
    await fn();
    say(`${what}: done`);
  } catch (e) {
    say(`${what} failed: ${e.message}`, true);
  }
  closeDialog();
  refresh();
}

// ---- login ----
function loginView() {
  $("#nav").hidden = true;
  $("#who").hidden = true;
  const err = h("p", { id: "login-error", class: "error", role: "alert" });
  const form = h("form", { class: "login", "aria-labelledby": "login-title",
    onsubmit: async (ev) => {
      ev.preventDefault();
      err.textContent = "";
      const body = new URLSearchParams({ grant_type: "password", username: form.username.value,
                                         password: form.password.value, scope: "ovirt-app-api" });
      try {
        const r = await fetch("/sso/oauth/token", { method: "POST", body,
          headers: { Accept: "application/json", "Content-Type": "application/x-www-form-urlencoded" } });
        const data = await r.json().catch(() => ({}));
        if (!r.ok) {
          err.textContent = r.status === 401 ? "Wrong user name or password." :
            (data.fault && data.fault.detail) || data.error_description || `Login failed (${r.status}).`;
          return;
        }
        S.token = data.access_token;
        sessionStorage.setItem(TOKEN_KEY, S.token);
        await start();
      } catch (e) {
        err.textContent = `Login failed: ${e.message}`;
      }
    } },
    h("h2", { id: "login-title", text: "Log in" }),
    h("label", {}, "User name", h("input", { name: "username", id: "username", autocomplete: "username", required: true })),
    h("label", {}, "Password", h("input", { name: "password", id: "password", type: "password",
                                            autocomplete: "current-password", required: true })),
    h("button", { type: "submit", id: "login-submit" }, "Log in"),
    err);
  $("#main").replaceChildren(form);
  form.username.focus();
}

async function logout(why) {
  const token = S.token;
  S.token = null;
  S.view = null;
  sessionStorage.removeItem(TOKEN_KEY);
  if (S.stream) S.stream.abort();
  S.stream = null;
  if (token && !why)
    fetch("/sso/oauth/revoke", { method: "POST", body: new URLSearchParams({ token }),
                                 headers: { "Content-Type": "application/x-www-form-urlencoded" } }).catch(() => {});
  loginView();
  say(why || "Logged out.");
}

async function start() {
  try {
    const me = await get("/api/session");
    S.user = me.user;
    S.role = me.role;
  } catch (e) {
    if (S.token) logout(`Cannot start: ${e.message}`);
    return;
  }
  $("#nav").hidden = false;
  $("#who").hidden = false;
  $("#who-name").textContent = `${S.user} (${S.role})`;
  document.body.dataset.role = S.role;
  if (!location.hash || location.hash === "#/") location.hash = "#/disks";
  else route();
  streamLoop();
}

// ---- live updates: the engine's Server-Sent Events, read with fetch so the token goes in a header ----
async function streamLoop() {
  if (S.stream) S.stream.abort();
  const ctrl = new AbortController();
  S.stream = ctrl;
  let retry = 2000;
  while (S.token && !ctrl.signal.aborted) {
    try {
      const r = await fetch("/api/events/stream", { headers: { Authorization: `Bearer ${S.token}`,
                                                               Accept: "text/event-stream" }, signal: ctrl.signal });
      if (r.status === 401) { logout("Your session ended: log in again."); return; }
      if (!r.ok) throw new Error(`stream ${r.status}`);
      const reader = r.body.pipeThrough(new TextDecoderStream()).getReader();
      let buf = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buf += value;
        if (buf.length > 1024 * 1024) throw new Error("stream event too large");
        let i;
        while ((i = buf.indexOf("\n\n")) >= 0) {
          const block = buf.slice(0, i);
          buf = buf.slice(i + 2);
          const ev = { event: "message", data: "" };
          for (const line of block.split("\n")) {
            const m = /^([a-z]+): ?(.*)$/.exec(line);
            if (!m) continue;
            if (m[1] === "data") ev.data += m[2];
            else if (m[1] === "retry") retry = Math.min(30000, Math.max(500, parseInt(m[2], 10) || 2000));
            else ev[m[1]] = m[2];
          }
          onStreamEvent(ev);
        }
      }
    } catch (e) {
      if (ctrl.signal.aborted) return;
    }
    $("#live").className = "";
    $("#live").title = "live updates: reconnecting";
    await new Promise((res) => setTimeout(res, retry));
  }
}

function onStreamEvent(ev) {
  if (ev.event === "hello") {
    // A new stream (first, or after an engine restart): whatever happened meanwhile, read it all again.
    $("#live").className = "on";
    $("#live").title = "live updates: connected";
    refresh();
  } else if (ev.event === "change") {
    let tables = [];
    try { tables = JSON.parse(ev.data).tables || []; } catch (e) { return; }
    if (S.view && tables.some((t) => S.view.tables.includes(t))) refresh();
  }
}

// ---- pages ----
function cells(labels, values) {
  return h("tr", {}, values.map((v, i) => h("td", { "data-label": labels[i] }, v)));
}
function table(caption, labels, rows, empty) {
  if (!rows.length) return h("p", { class: "muted" }, empty);
  return h("table", {}, h("caption", { class: "muted", style: null }, caption),
    h("thead", {}, h("tr", {}, labels.map((l) => h("th", { scope: "col" }, l)))),
    h("tbody", {}, rows.map((r) => cells(labels, r))));
}
function button(label, onclick, attrs) {
  return h("button", Object.assign({ type: "button", onclick }, attrs || {}), label);
}
function field(label, control) {
  return h("label", {}, label, control);
}
function select(name, options, attrs) {
  return h("select", Object.assign({ name }, attrs || {}),
    options.map(([v, t]) => h("option", { value: v }, t)));
}
function domainOptions() {
  return (S.lists.domains || []).map((d) => [d.id, d.name]);
}
function domainName(id) {
  const d = (S.lists.domains || []).find((x) => x.id === id);
  return d ? d.name : id;
}

// A small form in the dialog area, for an action on one row.
function openDialog(title, controls, submitLabel, onsubmit) {
  const dlg = $("#dialog");
  const form = h("form", { class: "inline", "aria-label": title,
    onsubmit: (ev) => { ev.preventDefault(); onsubmit(form); },
    onkeydown: (ev) => { if (ev.key === "Escape") closeDialog(); } },
    h("strong", {}, title), controls,
    h("button", { type: "submit", id: "dialog-submit" }, submitLabel),
    button("Cancel", closeDialog));
  dlg.replaceChildren(form);
  dlg.hidden = false;
  (form.querySelector("input, select") || form.querySelector("button")).focus();
}
function closeDialog() {
  const dlg = $("#dialog");
  if (dlg) { dlg.replaceChildren(); dlg.hidden = true; }
}

async function pollUntil(fn, what, ms) {
  const end = Date.now() + (ms || 300000);
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 300));
  }
}

const VIEWS = {
  hosts: {
    title: "Hosts", tables: ["hosts"],
    async data() {
      const { hosts } = await get("/api/hosts");
      return table("Hosts", ["Name", "Address", "Status", "SPM", "Jobs (running / limit)", "Copy rate / cap", "Actions"],
        hosts.map((x) => {
          const st = x.stats || {};
          return [x.name, `${x.address}:${x.port}`, x.status, x.spm ? "SPM" : "",
            st.job_limit !== undefined ? `${st.jobs_running} / ${st.job_limit}` : "",
            st.copy_rate !== undefined ? `${size(st.copy_rate)}/s / ${st.copy_rate_limit ? size(st.copy_rate_limit) + "/s" : "no cap"}` : "",
            can("admin") ? h("div", { class: "actions" },
              x.status === "maintenance" ?
                button("Activate", () => act(`Activating ${x.name}`, () => api("POST", `/api/hosts/${x.id}/activate`)),
                       { id: `activate-${x.id}`, "aria-label": `Activate host ${x.name}` }) :
                button("Maintenance", () => act(`Maintenance of ${x.name}`, () => api("POST", `/api/hosts/${x.id}/deactivate`)),
                       { id: `deactivate-${x.id}`, "aria-label": `Put host ${x.name} in maintenance` })) : ""];
        }), "No hosts.");
    },
  },
  storage: {
    title: "Storage domains", tables: ["storage_domains"],
    async data() {
      const { storagedomains } = await get("/api/storagedomains");
      return table("Storage domains", ["Name", "Status", "Used", "Free", "Master"],
        storagedomains.map((d) => [d.name, d.status, size(d.used), size(d.available), d.master ? "yes" : ""]),
        "No storage domains.");
    },
  },
  disks: {
    title: "Disks", tables: ["disks", "volumes", "jobs", "steps", "storage_domains"],
    forms() {
      if (!can("operator")) return [];
      const create = h("form", { class: "inline", id: "create-disk", "aria-label": "Create a disk",
        onsubmit: (ev) => {
          ev.preventDefault();
          const f = ev.target;
          act(`Creating disk ${f.name.value}`, () => api("POST", "/api/disks", {
            name: f.name.value, provisioned_size: Math.round(parseFloat(f.size.value) * MiB), format: f.format.value,
            sparse: f.sparse.checked, storage_domain: { id: f.domain.value } }));
        } },
        h("strong", {}, "New disk"),
        field("Name", h("input", { name: "name", id: "disk-name", required: true, maxlength: 255 })),
        field("Size (MiB)", h("input", { name: "size", id: "disk-size", type: "number", min: 1, step: "any", value: 1024, required: true })),
        field("Format", select("format", [["cow", "qcow2 (cow)"], ["raw", "raw"]], { id: "disk-format" })),
        field("Sparse", h("input", { name: "sparse", type: "checkbox", checked: true, id: "disk-sparse" })),
        field("Storage domain", select("domain", domainOptions(), { id: "disk-domain" })),
        h("button", { type: "submit", id: "disk-create" }, "Create"));
      const upload = h("form", { class: "inline", id: "upload-disk", "aria-label": "Upload a disk image",
        onsubmit: (ev) => { ev.preventDefault(); uploadImage(ev.target); } },
        h("strong", {}, "Upload image"),
        field("Image file (qcow2 or raw)", h("input", { name: "file", id: "upload-file", type: "file", required: true })),
        field("Disk name", h("input", { name: "name", id: "upload-name", required: true, maxlength: 255 })),
        field("Storage domain", select("domain", domainOptions(), { id: "upload-domain" })),
        h("button", { type: "submit", id: "upload-submit" }, "Upload"));
      return [create, upload];
    },
    async data() {
      const { disks } = await get("/api/disks");
      const steps = {};
      await Promise.all(disks.filter((d) => d.job).map(async (d) => {
        try { steps[d.id] = (await get(`/api/jobs/${d.job.id}/steps`)).steps; } catch (e) { steps[d.id] = []; }
      }));
      return table("Disks", ["Name", "Status", "Format", "Size", "Storage domain", "Actions"],
        disks.map((d) => [
          d.name,
          diskStatus(d, steps[d.id]),
          `${d.format}${d.sparse ? ", sparse" : ""}`,
          `${size(d.provisioned_size)} (${size(d.actual_size)} used)`,
          (d.storage_domains || []).map((s) => domainName(s.id)).join(", "),
          can("operator") ? diskActions(d) : "",
        ]), "No disks yet.");
    },
  },
  vms: {
    title: "VMs", tables: ["vms", "disks", "disk_attachments", "snapshots", "templates"],
    forms() {
      if (!can("operator")) return [];
      const templates = S.lists.templates || [];
      return [h("form", { class: "inline", id: "create-vm", "aria-label": "Create a VM",
        onsubmit: (ev) => {
          ev.preventDefault();
          const f = ev.target;
          const body = { name: f.name.value };
          if (f.template.value) { body.template = { id: f.template.value }; body.clone = f.mode.value === "clone"; }
          act(`Creating VM ${body.name}`, () => api("POST", "/api/vms", body));
        } },
        h("strong", {}, "New VM"),
        field("Name", h("input", { name: "name", id: "vm-name", required: true, maxlength: 255 })),
        field("From", select("template", [["", "empty"]].concat(templates.map((t) => [t.id, `template ${t.name}`])), { id: "vm-template" })),
        field("Disks", select("mode", [["thin", "thin (on the template)"], ["clone", "clone (independent copy)"]], { id: "vm-mode" })),
        h("button", { type: "submit", id: "vm-create" }, "Create"))];
    },
    async data() {
      const [{ vms }, { disks }] = await Promise.all([get("/api/vms"), get("/api/disks")]);
      const snaps = {};
      await Promise.all(vms.map(async (v) => {
        try { snaps[v.id] = (await get(`/api/vms/${v.id}/snapshots`)).snapshots; } catch (e) { snaps[v.id] = []; }
      }));
      const dname = (id) => (disks.find((d) => d.id === id) || { name: id }).name;
      const free = disks.filter((d) => d.status === "ok" && !vms.some((v) => (v.disk_attachments || []).some((a) => a.disk.id === d.id)));
      return table("VMs", ["Name", "Status", "Disks", "Snapshots", "Actions"],
        vms.map((v) => [
          v.name,
          v.status,
          h("ul", { class: "steps" }, (v.disk_attachments || []).map((a) => h("li", {}, dname(a.disk.id), " ",
            can("operator") ? button("Detach", () => act(`Detaching ${dname(a.disk.id)}`,
              () => api("DELETE", `/api/vms/${v.id}/diskattachments/${a.disk.id}`)),
              { id: `detach-${v.id}-${a.disk.id}`, "aria-label": `Detach disk ${dname(a.disk.id)} from ${v.name}` }) : ""))),
          h("ul", { class: "steps" }, (snaps[v.id] || []).map((s) => h("li", {}, `${s.description || "snapshot"} — ${time(s.date)} (${s.snapshot_status})`))),
          can("operator") ? h("div", { class: "actions" },
            button("Attach disk", () => openDialog(`Attach a disk to ${v.name}`,
              field("Disk", select("disk", free.map((d) => [d.id, d.name]), { id: "attach-disk" })), "Attach",
              (f) => act(`Attaching to ${v.name}`, () => api("POST", `/api/vms/${v.id}/diskattachments`, { disk: { id: f.disk.value } }))),
              { id: `attach-${v.id}`, "aria-label": `Attach a disk to ${v.name}` }),
            button("Snapshot", () => openDialog(`Snapshot of ${v.name}`,
              field("Description", h("input", { name: "description", id: "snapshot-description", maxlength: 255 })), "Take snapshot",
              (f) => act(`Snapshot of ${v.name}`, () => api("POST", `/api/vms/${v.id}/snapshots`, { description: f.description.value }))),
              { id: `snapshot-${v.id}`, "aria-label": `Take a snapshot of ${v.name}` }),
            button("Make template", () => openDialog(`Template from ${v.name}`,
              field("Template name", h("input", { name: "name", id: "template-name", required: true, maxlength: 255 })), "Make template",
              (f) => act(`Template from ${v.name}`, () => api("POST", "/api/templates", { name: f.name.value, vm: { id: v.id } }))),
              { id: `template-${v.id}`, "aria-label": `Make a template from ${v.name}` }),
            button("Delete", () => openDialog(`Delete VM ${v.name} and its disks?`, [], "Delete",
              () => act(`Deleting ${v.name}`, () => api("DELETE", `/api/vms/${v.id}`))),
              { id: `delete-vm-${v.id}`, class: "danger", "aria-label": `Delete VM ${v.name}` })) : "",
        ]), "No VMs yet.");
    },
  },
  templates: {
    title: "Templates", tables: ["templates", "disk_attachments"],
    async data() {
      const { templates } = await get("/api/templates");
      return table("Templates", ["Name", "Status", "Made from VM", "Disks", "Created", "Actions"],
        templates.map((t) => [t.name, t.status, t.vm ? t.vm.id : "", String((t.disk_attachments || []).length),
          time(t.creation_time),
          can("operator") ? button("Delete", () => openDialog(`Delete template ${t.name}?`, [], "Delete",
            () => act(`Deleting ${t.name}`, () => api("DELETE", `/api/templates/${t.id}`))),
            { id: `delete-template-${t.id}`, class: "danger", "aria-label": `Delete template ${t.name}` }) : ""]),
        "No templates yet.");
    },
  },
  jobs: {
    title: "Jobs", tables: ["jobs", "steps"],
    async data() {
      const jobs = (await get("/api/jobs")).jobs.slice(0, 50);
      const steps = {};
      await Promise.all(jobs.slice(0, 20).map(async (j) => {
        try { steps[j.id] = (await get(`/api/jobs/${j.id}/steps`)).steps; } catch (e) { steps[j.id] = []; }
      }));
      return table("Jobs", ["Job", "Status", "Progress", "Duration", "Steps", "Actions"],
        jobs.map((j) => [
          j.description,
          j.status,
          h("progress", { max: 100, value: j.progress || 0, "aria-label": `Progress of ${j.description}` }),
          dur(j.start_time, j.end_time),
          h("ul", { class: "steps" }, (steps[j.id] || []).map((s) => h("li", {},
            `${s.description}: ${s.status}${s.status_detail ? " (" + s.status_detail + ")" : ""}, ${Math.round(s.progress || 0)} %` +
            `${s.execution_host ? " on " + s.execution_host.name : ""}${s.start_time ? ", " + dur(s.start_time, s.end_time) : ""}`))),
          can("operator") && j.status === "started" ?
            button("Cancel", () => act(`Cancelling ${j.description}`, () => api("POST", `/api/jobs/${j.id}/cancel`)),
                   { id: `cancel-${j.id}`, class: "danger", "aria-label": `Cancel job ${j.description}` }) : "",
        ]), "No jobs yet.");
    },
  },
  events: {
    title: "Events", tables: ["events"],
    forms() {
      return [h("form", { class: "inline", id: "event-filter", "aria-label": "Filter events",
        onsubmit: (ev) => ev.preventDefault(), oninput: () => refresh() },
        field("Text", h("input", { name: "text", id: "event-text", type: "search" })),
        field("Severity", select("severity", [["", "any"], ["normal", "normal"], ["warning", "warning"]], { id: "event-severity" })))];
    },
    async data() {
      const { events } = await get("/api/events");
      const f = $("#event-filter");
      const text = f ? f.text.value.toLowerCase() : "";
      const sev = f ? f.severity.value : "";
      const shown = events.filter((e) => (!sev || e.severity === sev) && (!text || e.message.toLowerCase().includes(text)));
      return table("Events", ["Time", "Severity", "Message", "User"],
        shown.map((e) => [time(e.time), h("span", { class: e.severity === "warning" ? "error" : "" }, e.severity),
                          e.message, e.user_name || ""]), "No events match.");
    },
  },
};

// A running step's estimate after its progress: nothing when unknown (null), "stalled" when flagged.
function etaText(s) {
  if (s.status_detail === "stalled") return ", stalled";
  const e = s.eta_seconds;
  return e == null ? "" : e >= 60 ? `, ${Math.floor(e / 60)} min ${e % 60} s left` : `, ${e} s left`;
}

function diskStatus(d, steps) {
  if (d.status !== "locked") return h("span", { class: d.status === "ok" ? "ok" : "error", "data-disk-status": d.id }, d.status);
  const running = (steps || []).filter((s) => s.status === "started" || s.status === "waiting");
  return h("div", {},
    h("span", { "data-disk-status": d.id }, `locked, ${Math.round(d.progress || 0)} %`), " ",
    h("progress", { max: 100, value: d.progress || 0, "data-disk": d.id, "aria-label": `Progress of disk ${d.name}` }),
    h("ul", { class: "steps", "data-disk-steps": d.id }, running.map((s) => h("li", {},
      `${s.description}: ${Math.round(s.progress || 0)} %${etaText(s)}`,
      s.execution_host ? h("span", { "data-host": s.execution_host.name }, ` on host ${s.execution_host.name}`) :
        (s.status_detail ? ` (${s.status_detail})` : "")))));
}

function diskActions(d) {
  const ok = d.status === "ok";
  const others = domainOptions().filter(([id]) => !(d.storage_domains || []).some((s) => s.id === id));
  return h("div", { class: "actions" },
    button("Move", () => openDialog(`Move ${d.name}`, field("To storage domain", select("domain", others, { id: "move-domain" })), "Move",
      (f) => act(`Moving ${d.name}`, () => api("POST", `/api/disks/${d.id}/move`, { storage_domain: { id: f.domain.value } }))),
      { id: `move-${d.id}`, disabled: !ok, "aria-label": `Move disk ${d.name}` }),
    button("Copy", () => openDialog(`Copy ${d.name}`, [
      field("To storage domain", select("domain", domainOptions(), { id: "copy-domain" })),
      field("Name of the copy", h("input", { name: "name", id: "copy-name", value: `${d.name}-copy`, maxlength: 255 }))], "Copy",
      (f) => act(`Copying ${d.name}`, () => api("POST", `/api/disks/${d.id}/copy`, { storage_domain: { id: f.domain.value }, name: f.name.value }))),
      { id: `copy-${d.id}`, disabled: !ok, "aria-label": `Copy disk ${d.name}` }),
    button("Download", () => downloadImage(d), { id: `download-${d.id}`, disabled: !ok || (d.volumes && d.volumes.length > 1),
                                                 "aria-label": `Download disk ${d.name}` }),
    button("Delete", () => openDialog(`Delete disk ${d.name}?`, [], "Delete",
      () => act(`Deleting ${d.name}`, () => api("DELETE", `/api/disks/${d.id}`))),
      { id: `delete-${d.id}`, class: "danger", disabled: d.status === "locked", "aria-label": `Delete disk ${d.name}` }));
}

// ---- image transfers: the bytes go between the browser and the host, never through the engine ----
async function qcow2VirtualSize(file) {
  const head = new DataView(await file.slice(0, 32).arrayBuffer());
  if (head.byteLength < 32 || head.getUint32(0) !== 0x514649fb) return null;     // "QFI\xfb"
  return Number(head.getBigUint64(24));
}

async function finishTransfer(t) {
  await api("POST", `/api/imagetransfers/${t.id}/finalize`);
  const end = await pollUntil(async () => {
    const x = await get(`/api/imagetransfers/${t.id}`);
    return x.phase.startsWith("finished") || x.phase === "cancelled" ? x : null;
  }, "the transfer to finish");
  if (end.phase !== "finished_success") throw new Error(end.error || end.phase);
}

async function uploadImage(f) {
  const file = f.file.files[0];
  if (!file) return;
  act(`Uploading ${file.name}`, async () => {
    const vsize = await qcow2VirtualSize(file);
    const created = await api("POST", "/api/disks", { name: f.name.value, provisioned_size: vsize || file.size,
      format: vsize ? "cow" : "raw", sparse: true, storage_domain: { id: f.domain.value } });
    const id = created.disk.id;
    await pollUntil(async () => (await get(`/api/disks/${id}`)).status === "ok", "the new disk");
    const t = await api("POST", "/api/imagetransfers", { disk: { id }, direction: "upload", size: file.size,
                                                         virtual_size: vsize || file.size });
    for (let off = 0; off < file.size; off += CHUNK) {
      const end = Math.min(file.size, off + CHUNK);
      say(`Uploading ${file.name}: ${Math.round((100 * off) / file.size)} %`);
      let r;
      try {
        r = await fetch(t.transfer_url, { method: "PUT", body: file.slice(off, end),
          headers: { "Content-Range": `bytes ${off}-${end - 1}/*` } });
      } catch (e) {
        throw new Error(`the host's transfer endpoint ${new URL(t.transfer_url).host} did not answer: ${e.message}`);
      }
      if (!r.ok) throw new Error(`the host answered ${r.status}: ${(await r.text()).slice(0, 200)}`);
    }
    await finishTransfer(t);
  });
}

async function downloadImage(d) {
  act(`Downloading ${d.name}`, async () => {
    const t = await api("POST", "/api/imagetransfers", { disk: { id: d.id }, direction: "download" });
    let blob;
    try {
      const r = await fetch(t.transfer_url);
      if (!r.ok) throw new Error(`the host answered ${r.status}`);
      blob = await r.blob();
    } finally {
      await finishTransfer(t);
    }
    const a = h("a", { href: URL.createObjectURL(blob), download: `${d.name}.${d.format === "cow" ? "qcow2" : "raw"}` });
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(a.href), 60000);
  });
}

// ---- routing and redrawing ----
async function route() {
  const name = (location.hash.replace(/^#\//, "") || "disks").split("?")[0];
  const view = VIEWS[name];
  if (!S.token) return loginView();
  if (!view) { location.hash = "#/disks"; return; }
  S.view = view;
  for (const a of document.querySelectorAll("nav a"))
    a.toggleAttribute("aria-current", a.getAttribute("href") === `#/${name}`) && a.setAttribute("aria-current", "page");
  document.title = `${view.title} — Ferry`;
  try {
    S.lists.domains = (await get("/api/storagedomains")).storagedomains;
    if (name === "vms") S.lists.templates = (await get("/api/templates")).templates;
  } catch (e) {
    say(e.message, true);
  }
  if (!S.token || S.view !== view) return;      // logged out, or another page asked for, meanwhile
  $("#main").replaceChildren(
    h("h2", { id: "page-title" }, view.title),
    h("div", { id: "forms" }, view.forms ? view.forms() : []),
    h("div", { id: "dialog", hidden: true }),
    h("section", { id: "data", "data-view": name, "aria-labelledby": "page-title", "aria-busy": "true" }));
  S.view.name = name;
  refresh();
}

// One redraw at a time; changes during one ask for another after it.
async function refresh() {
  if (!S.view || !S.token) return;
  if (S.refreshing) { S.again = true; return; }
  S.refreshing = true;
  try {
    do {
      S.again = false;
      const view = S.view;
      let node;
      try {
        node = await view.data();
      } catch (e) {
        node = h("p", { class: "error" }, `Cannot read ${view.title.toLowerCase()}: ${e.message}`);
      }
      const data = $("#data");
      if (view !== S.view || !data) continue;
      const focused = document.activeElement && document.activeElement.id;
      data.replaceChildren(node);
      data.setAttribute("aria-busy", "false");
      if (focused && data.contains(document.getElementById(focused)) && document.activeElement === document.body)
        document.getElementById(focused).focus();
    } while (S.again);
  } finally {
    S.refreshing = false;
  }
}

window.addEventListener("hashchange", route);
document.addEventListener("DOMContentLoaded", () => {
  $("#logout").addEventListener("click", () => logout());
  if (S.token) start();
  else loginView();
});
