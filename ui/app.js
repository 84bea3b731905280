// SPDX-License-Identifier: GPL-2.0-or-later
// Ferry's web UI: plain JavaScript, no build step (ARCHITECTURE.md, Web UI).
// Every datum comes from /api with the user's token; the page redraws what
// the engine's event stream (/api/events/stream) says changed.
"use strict";

const TOKEN_KEY = "ferry.token";
const CHUNK = 8 * 1024 * 1024;          // the agent's transfer_max_request
const MiB = 1024 * 1024, GiB = 1024 * MiB;

const S = { token: sessionStorage.getItem(TOKEN_KEY), user: null, role: null, view: null, changed: null,
            refreshing: false, again: false, lists: {}, pages: {}, standby: false, activeUrl: null, run: null };

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
const RANK = { viewer: 0, operator: 1, admin: 2 };
// What the page offers: what the user's role may do, and on a standby engine only reads (checkEngine).
const can = (role) => (role === "viewer" || !S.standby) && RANK[S.role] >= RANK[role];
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
// A request that gets no answer at all (fetch's TypeError "Failed to fetch") did not reach the engine or
// lost its connection. Browsers drop their connections when the machine's network changes (an address or
// interface added or removed anywhere on it: Chromium fails the requests then waiting for a connection with
// ERR_NETWORK_CHANGED and does not resend them), so a GET, which changes nothing, is sent once more after
// NET_RETRY_MS; a write is never resent (it may have been done), and neither is a GET that fails twice.
const NET_RETRY_MS = 500;
async function send(method, path, init) {
  try {
    // A write is never sent on by a redirect: a standby's 307 names the active engine, another origin,
    // where the browser would preflight it and fail without an answer (the engine speaks no CORS).
    // api() sees the redirect itself (an "opaqueredirect") and says what it means.
    return await fetch(path, { method, ...init, redirect: method === "GET" ? "follow" : "manual" });
  } catch (e) {
    if (e.name === "AbortError") throw e;
    if (method !== "GET")
      throw new Error(`no answer from the engine (${e.message}); check whether it was done before trying again`);
  }
  await new Promise((res) => setTimeout(res, NET_RETRY_MS));
  try {
    return await fetch(path, { method, ...init });
  } catch (e) {
    if (e.name === "AbortError") throw e;
    throw new Error(`no answer from the engine, twice (${e.message}); check the network and reload the page`);
  }
}

async function api(method, path, body) {
  const headers = { Accept: "application/json" };
  if (S.token) headers.Authorization = `Bearer ${S.token}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let r;
  try {
    r = await send(method, path, { headers, body: body === undefined ? undefined : JSON.stringify(body) });
  } catch (e) {
    if (method !== "GET") checkEngine();               // did this engine become a standby? The banner says so.
    throw e;
  }
  if (r.type === "opaqueredirect") {
    // Only a standby redirects (a write, before even checking the token): nothing was done.
    await checkEngine();
    throw new Error(`nothing was done: this engine is a standby, ${S.activeUrl ?
      `changes are made on the active engine at ${S.activeUrl}` : "and no engine is active at the moment"}`);
  }
  if (r.status === 503 && method !== "GET") checkEngine();   // no engine active yet (a takeover), or a lease in doubt
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
    const r = await fn();
    // An answer naming a job means accepted, not finished: the jobs page and the live view show the rest.
    say(`${what}: ${r && r.job ? "started" : "done"}`);
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
  liveStop();
  setStandby(false, null);
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
  await checkEngine();
  if (!S.token) return;
  if (!location.hash || location.hash === "#/") location.hash = "#/disks";
  else route();
  liveStart();
}

// ---- which engine this is (ARCHITECTURE.md, "Several engines" and "Web UI") ----
// On PostgreSQL several engines share the inventory and one is active. A standby serves every read but
// answers a write with a 307 to the active engine: another origin, which the page cannot write to (no
// CORS; a token is kept per origin). So the page asks GET /api/engine at login, on a new stream (an engine
// that lost the lead comes back as a standby), when a write is redirected or refused with 503, and when
// shown again; on a standby it says so on every page with a link to the active engine, offers no action,
// and rereads its page every STANDBY_POLL_MS, since a standby's event stream hears only its own writes.
const STANDBY_POLL_MS = 5000;

async function checkEngine() {
  let e;
  try {
    e = await get("/api/engine");
  } catch (err) {
    return;                                           // no answer: what the page knew stands
  }
  if (!S.token) return;
  const was = S.standby;
  setStandby(e.role !== "active", e.active_url || null);
  if (was !== S.standby && S.view) route();          // the action controls come or go
}

function setStandby(standby, activeUrl) {
  S.standby = standby;
  S.activeUrl = activeUrl;
  const b = $("#standby");
  document.body.dataset.engine = standby ? "standby" : "active";
  setLive(LIVE.up);
  if (!standby) {
    b.hidden = true;
    b.replaceChildren();
    clearTimeout(S.pollTimer);
    S.pollTimer = null;
    return;
  }
  // Only an http(s) URL becomes a link: the address comes from the shared database, not from this page.
  let url = null;
  try { url = activeUrl && new URL("/", activeUrl); } catch (err) { url = null; }
  if (url && url.protocol !== "https:" && url.protocol !== "http:") url = null;
  b.replaceChildren(...[h("strong", {}, "This engine is a standby"), ": it shows the inventory but changes nothing. ",
    activeUrl ? ["Changes are made on the active engine at ",
                 url ? h("a", { href: url.href, id: "active-engine" }, url.origin) : activeUrl, " (log in there). "] :
      "No engine is active at the moment (a takeover takes seconds): no change can be made now. ",
    `This page rereads itself every ${STANDBY_POLL_MS / 1000} s.`].flat());
  b.hidden = false;
  if (!S.pollTimer) S.pollTimer = setTimeout(standbyPoll, STANDBY_POLL_MS);
}

async function standbyPoll() {
  S.pollTimer = null;
  if (!S.token || !S.standby) return;
  if (document.visibilityState !== "hidden") {
    await checkEngine();
    if (S.standby) refresh();
  }
  if (S.standby && S.token && !S.pollTimer) S.pollTimer = setTimeout(standbyPoll, STANDBY_POLL_MS);
}

// ---- live updates: the engine's Server-Sent Events, read with fetch so the token goes in a header ----
// A browser opens at most 6 HTTP/1.1 connections per origin, and a stream holds one for good: so
// the tabs of this origin share ONE stream. The tab holding the Web Lock "ferry-events" reads it and
// passes every event on a BroadcastChannel; the others queue on the lock and take over when the
// leader closes, hides or logs out. A hidden tab holds no stream and reads everything again on return.
const LIVE = { ctrl: null, leader: false, up: false,
               bc: typeof BroadcastChannel === "function" ? new BroadcastChannel("ferry-events") : null };
const shareable = () => LIVE.bc && navigator.locks;

function setLive(up) {
  LIVE.up = up;
  // A standby's stream hears only the standby's own writes: the page rereads instead (checkEngine).
  $("#live").className = up && !S.standby ? "on" : "";
  $("#live").setAttribute("aria-label", S.standby ? "live updates: none from a standby engine" :
                                        up ? "live updates: connected" : "live updates: reconnecting");
  $("#live").title = $("#live").getAttribute("aria-label");
}

function liveStart() {
  if (LIVE.ctrl || !S.token || document.visibilityState === "hidden") return;
  const ctrl = new AbortController();
  LIVE.ctrl = ctrl;
  if (!shareable()) { streamLoop(ctrl); return; }       // no Web Locks (plain http): a stream per tab
  navigator.locks.request("ferry-events", { signal: ctrl.signal }, async () => {
    LIVE.leader = true;
    try { await streamLoop(ctrl); } finally { LIVE.leader = false; }
  }).catch(() => {});
  LIVE.bc.postMessage({ type: "who" });                 // the leader, if any, answers whether it is connected
}

function liveStop() {
  if (LIVE.ctrl) LIVE.ctrl.abort();
  LIVE.ctrl = null;
  setLive(false);
}

function liveEvent(ev) {
  if (LIVE.leader) LIVE.bc.postMessage({ type: "event", ev });
  onStreamEvent(ev);
}

if (LIVE.bc) LIVE.bc.onmessage = (m) => {
  const msg = m.data || {};
  if (msg.type === "who" && LIVE.leader) LIVE.bc.postMessage({ type: "state", up: LIVE.up });
  else if (LIVE.leader || !LIVE.ctrl) return;          // a hidden or logged-out tab ignores the news
  else if (msg.type === "state") setLive(!!msg.up);
  else if (msg.type === "event" && msg.ev) onStreamEvent(msg.ev);
};

document.addEventListener("visibilitychange", () => {
  if (document.visibilityState === "hidden") { liveStop(); return; }
  if (!S.token) return;
  liveStart();
  checkEngine();                                        // the engines may have changed roles meanwhile
  refresh();                                            // what changed while hidden
});

async function streamLoop(ctrl) {
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
          liveEvent(ev);
        }
      }
    } catch (e) {
      if (ctrl.signal.aborted) return;
    }
    setLive(false);
    if (LIVE.leader) LIVE.bc.postMessage({ type: "state", up: false });
    await new Promise((res) => {
      const t = setTimeout(res, retry);
      ctrl.signal.addEventListener("abort", () => { clearTimeout(t); res(); }, { once: true });
    });
  }
}

function onStreamEvent(ev) {
  if (ev.event === "hello") {
    // A new stream (first, or after an engine restart): whatever happened meanwhile, read it all again.
    // A new engine run may have another role (a deposed leader comes back as a standby).
    let run = null;
    try { run = JSON.parse(ev.data).run; } catch (e) { run = null; }
    if (S.run && run !== S.run) checkEngine();
    S.run = run;
    setLive(true);
    refresh();
  } else if (ev.event === "change") {
    let tables = [];
    try { tables = JSON.parse(ev.data).tables || []; } catch (e) { return; }
    if (S.view && tables.some((t) => S.view.tables.includes(t))) refreshSoon(tables);
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
  // Where focus goes back when the dialog closes: the control that opened it (by id: a redraw replaces it).
  S.opener = document.activeElement && document.activeElement.id;
  dlg.replaceChildren(form);
  dlg.hidden = false;
  (form.querySelector("input, select") || form.querySelector("button")).focus();
}
function closeDialog() {
  const dlg = $("#dialog");
  if (dlg && !dlg.hidden) {
    dlg.replaceChildren();
    dlg.hidden = true;
    const back = S.opener && document.getElementById(S.opener);
    (back || $("#main")).focus();
  }
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

// The long lists come a page at a time (GET ...?max=N&page=TOKEN, keyset pages): a view shows
// S.pages[key] pages (one at first) and a "More" button under the table reads one more. A redraw
// reads the pages shown again, so live changes reach every row on screen.
const PAGE_ROWS = 100;
async function getPaged(path, key, rows) {
  const per = rows || PAGE_ROWS;
  let all = [], token = null;
  // The view's name filter (nameFilter): oVirt's search=name=NAME, exact, on the engine.
  const f = $(`#search-${key}`);
  const name = f ? f.value.trim() : "";
  const search = name ? "&search=" + encodeURIComponent("name=" + name) : "";
  for (let i = 0; i < (S.pages[key] || 1); i++) {
    const r = await get(`${path}?max=${per}${search}${token ? "&page=" + encodeURIComponent(token) : ""}`);
    all = all.concat(r[key]);
    token = r.next;
    if (!token) break;
  }
  return { rows: all, more: !!token };
}
// A labelled search box above a list that the engine searches by name; typing reads page one again.
function nameFilter(key) {
  return h("form", { class: "inline", id: `filter-${key}`, role: "search", "aria-label": `Find ${key} by name`,
    onsubmit: (ev) => ev.preventDefault(), oninput: () => { S.pages[key] = 1; refresh(); } },
    field("Name (exact)", h("input", { name: "name", id: `search-${key}`, type: "search", maxlength: 255 })));
}
// Every row of a collection: a GET without max answers at most the engine's list_max rows (1000 by
// default), the rest behind "next" (docs/rest-api.md), which this follows.
async function getAll(path, key) {
  const first = await get(path);
  let all = first[key], token = first.next;
  for (let i = 0; token && i < 1000; i++) {
    const r = await get(`${path}?page=${encodeURIComponent(token)}`);
    all = all.concat(r[key]);
    token = r.next;
  }
  return { [key]: all };
}
function withMore(key, node, more) {
  if (!more) return node;
  return h("div", {}, node, button("More", () => { S.pages[key] = (S.pages[key] || 1) + 1; refresh(); },
    { id: `more-${key}`, "aria-label": `Show more ${key}` }));
}

const VIEWS = {
  hosts: {
    title: "Hosts", tables: ["hosts"], search: "hosts",
    async data() {
      const { rows: hosts, more } = await getPaged("/api/hosts", "hosts");
      return withMore("hosts", table("Hosts", ["Name", "Address", "Status", "SPM", "Jobs (running / limit)", "Copy rate / cap", "Actions"],
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
        }), "No hosts."), more);
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
    title: "Disks", tables: ["disks", "volumes", "jobs", "steps", "storage_domains"], search: "disks",
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
    async data(changed) {
      const { rows: disks, more } = await getPaged("/api/disks", "disks");
      const steps = await jobSteps(this, disks.filter((d) => d.job).map((d) => d.job.id), changed);
      return withMore("disks", table("Disks", ["Name", "Status", "Format", "Size", "Storage domain", "Actions"],
        disks.map((d) => [
          d.name,
          diskStatus(d, d.job && steps[d.job.id]),
          `${d.format}${d.sparse ? ", sparse" : ""}`,
          `${size(d.provisioned_size)} (${size(d.actual_size)} used)`,
          (d.storage_domains || []).map((s) => domainName(s.id)).join(", "),
          can("operator") ? diskActions(d) : "",
        ]), "No disks yet."), more);
    },
  },
  vms: {
    // Not "disks": the page shows only its disks' names, which never change, and the disks table changes
    // throughout every copy.
    title: "VMs", tables: ["vms", "disk_attachments", "snapshots", "templates"], search: "vms",
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
    async data(changed) {
      const { rows: vms, more } = await getPaged("/api/vms", "vms");
      // Each VM's snapshots are read again only when the snapshots table changed, or the VM is new here.
      const old = changed("snapshots") ? {} : (this.snaps || {});
      const snaps = {};
      await Promise.all(vms.map(async (v) => {
        if (old[v.id]) { snaps[v.id] = old[v.id]; return; }
        try { snaps[v.id] = (await get(`/api/vms/${v.id}/snapshots`)).snapshots; } catch (e) { snaps[v.id] = []; }
      }));
      this.snaps = snaps;
      const attached = vms.flatMap((v) => (v.disk_attachments || []).map((a) => a.disk.id));
      const names = await diskNames(this, attached);
      const dname = (id) => names.get(id) || id;
      return withMore("vms", table("VMs", ["Name", "Status", "Disks", "Snapshots", "Actions"],
        vms.map((v) => [
          v.name,
          v.status,
          h("ul", { class: "steps" }, (v.disk_attachments || []).map((a) => h("li", {}, dname(a.disk.id), " ",
            can("operator") ? button("Detach", () => act(`Detaching ${dname(a.disk.id)}`,
              () => api("DELETE", `/api/vms/${v.id}/diskattachments/${a.disk.id}`)),
              { id: `detach-${v.id}-${a.disk.id}`, "aria-label": `Detach disk ${dname(a.disk.id)} from ${v.name}` }) : ""))),
          h("ul", { class: "steps" }, (snaps[v.id] || []).map((s) => h("li", {}, `${s.description || "snapshot"} — ${time(s.date)} (${s.snapshot_status})`))),
          can("operator") ? h("div", { class: "actions" },
            button("Attach disk", () => attachDialog(v, new Set(attached)),
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
        ]), "No VMs yet."), more);
    },
  },
  templates: {
    title: "Templates", tables: ["templates", "disk_attachments"], search: "templates",
    async data() {
      const { rows: templates, more } = await getPaged("/api/templates", "templates");
      return withMore("templates", table("Templates", ["Name", "Status", "Made from VM", "Disks", "Created", "Actions"],
        templates.map((t) => [t.name, t.status, t.vm ? t.vm.id : "", String((t.disk_attachments || []).length),
          time(t.creation_time),
          can("operator") ? button("Delete", () => openDialog(`Delete template ${t.name}?`, [], "Delete",
            () => act(`Deleting ${t.name}`, () => api("DELETE", `/api/templates/${t.id}`))),
            { id: `delete-template-${t.id}`, class: "danger", "aria-label": `Delete template ${t.name}` }) : ""]),
        "No templates yet."), more);
    },
  },
  jobs: {
    title: "Jobs", tables: ["jobs", "steps"],
    async data(changed) {
      const { rows: jobs, more } = await getPaged("/api/jobs", "jobs", 50);
      const steps = await jobSteps(this, jobs.slice(0, 20).map((j) => j.id), changed);
      return withMore("jobs", table("Jobs", ["Job", "Status", "Progress", "Duration", "Steps", "Actions"],
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
        ]), "No jobs yet."), more);
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
      const { rows: events, more } = await getPaged("/api/events", "events");
      const f = $("#event-filter");
      const text = f ? f.text.value.toLowerCase() : "";
      const sev = f ? f.severity.value : "";
      const shown = events.filter((e) => (!sev || e.severity === sev) && (!text || e.message.toLowerCase().includes(text)));
      return withMore("events", table("Events", ["Time", "Severity", "Message", "User"],
        shown.map((e) => [time(e.time), h("span", { class: e.severity === "warning" ? "error" : "" }, e.severity),
                          e.message, e.user_name || ""]), "No events match."), more);
    },
  },
};

// A running step's estimate after its progress: nothing when unknown (null), "stalled" when flagged.
function etaText(s) {
  if (s.status_detail === "stalled") return ", stalled";
  const e = s.eta_seconds;
  return e == null ? "" : e >= 60 ? `, ${Math.floor(e / 60)} min ${e % 60} s left` : `, ${e} s left`;
}

// The steps of those jobs: read again only when the steps table changed, or for a job not seen before.
async function jobSteps(view, ids, changed) {
  const old = changed("steps") ? {} : (view.steps || {});
  const steps = {};
  await Promise.all(ids.map(async (id) => {
    if (old[id]) { steps[id] = old[id]; return; }
    try { steps[id] = (await get(`/api/jobs/${id}/steps`)).steps; } catch (e) { steps[id] = []; }
  }));
  view.steps = steps;
  return steps;
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

// The names of the disks attached to the VMs shown, each read once (GET /api/disks/{id}): a disk's name never
// changes, so a redraw reads only disks it has not seen. The reads are bounded by the page's attachments,
// whatever the size of the inventory; the cache by DISK_NAMES_MAX (past it, only the page's names are kept).
const DISK_NAMES_MAX = 5000;
async function diskNames(view, ids) {
  const want = [...new Set(ids)];
  let names = view.names || new Map();
  if (names.size > DISK_NAMES_MAX) names = new Map(want.filter((id) => names.has(id)).map((id) => [id, names.get(id)]));
  await Promise.all(want.filter((id) => !names.has(id)).map(async (id) => {
    try { names.set(id, (await get(`/api/disks/${encodeURIComponent(id)}`)).name); } catch (e) { /* gone: its id shows */ }
  }));
  view.names = names;
  return names;
}

// The disks a VM may take, found by the engine a page at a time (search=name= for an exact name), never all
// of them: the ok ones not attached to a VM of this page. The engine refuses (409, saying why) a disk
// attached to another VM or belonging to a template; the disk list does not show attachments.
function attachDialog(v, attached) {
  const find = h("input", { name: "find", id: "attach-find", type: "search", maxlength: 255,
                            placeholder: "any name" });
  const pick = select("disk", [], { id: "attach-disk", required: true });
  const note = h("span", { class: "muted", id: "attach-note", role: "status" });
  let token = null, seq = 0, timer = null;
  const more = button("More disks", () => load(false), { id: "attach-more", hidden: true });
  async function load(fresh) {
    const mine = ++seq;
    const name = find.value.trim();
    note.textContent = "Reading disks…";
    let r;
    try {
      r = await get(`/api/disks?max=${PAGE_ROWS}${name ? "&search=" + encodeURIComponent("name=" + name) : ""}` +
                    `${!fresh && token ? "&page=" + encodeURIComponent(token) : ""}`);
    } catch (e) {
      if (mine === seq) note.textContent = `Cannot read disks: ${e.message}`;
      return;
    }
    if (mine !== seq) return;                         // another search or page was asked for meanwhile
    if (fresh) pick.replaceChildren();
    for (const d of r.disks)
      if (d.status === "ok" && !attached.has(d.id))
        pick.append(h("option", { value: d.id }, `${d.name} (${size(d.provisioned_size)}, ` +
                      `${(d.storage_domains || []).map((s) => domainName(s.id)).join(", ")})`));
    token = r.next || null;
    more.hidden = !token;
    note.textContent = pick.options.length ? "" : name ? `No free disk is named ${name}.` :
      token ? "None free among these: read more." : "No free disk.";
  }
  find.addEventListener("input", () => { clearTimeout(timer); timer = setTimeout(() => load(true), 300); });
  find.addEventListener("keydown", (ev) => {
    if (ev.key === "Enter") { ev.preventDefault(); clearTimeout(timer); load(true); }
  });
  openDialog(`Attach a disk to ${v.name}`,
    [field("Find by name (exact)", find), field("Disk", pick), more, note], "Attach",
    (f) => act(`Attaching to ${v.name}`, () => api("POST", `/api/vms/${v.id}/diskattachments`, { disk: { id: f.disk.value } })));
  load(true);
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
    let t = null;
    try {
      await pollUntil(async () => (await get(`/api/disks/${id}`)).status === "ok", "the new disk");
      t = await api("POST", "/api/imagetransfers", { disk: { id }, direction: "upload", size: file.size,
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
    } catch (e) {
      // Leave nothing half made behind: the transfer cancelled (the host drops its ticket), then the new disk removed.
      say(`Uploading ${file.name} failed (${e.message}); cleaning up…`, true);
      await uploadCleanup(t, id);
      throw e;
    }
  });
}

async function uploadCleanup(t, id) {
  try {
    if (t) await api("POST", `/api/imagetransfers/${t.id}/cancel`).catch(() => {});
    await pollUntil(async () => (await get(`/api/disks/${id}`)).status !== "locked", "the disk to unlock", 60000);
    await api("DELETE", `/api/disks/${id}`);
  } catch (e) {
    // The error the user sees is the upload's; this one only in the console.
    console.warn(`cleaning up after a failed upload: ${e.message}`);
  }
}

// The browser saves the host's answer straight to a file (filename= makes the agent answer
// Content-Disposition: attachment), so no image passes through the page's memory. The page cannot see the
// download end: it finalizes once the engine reports every byte read (the host's count, polled every 2 s).
// Known limit: the host counts bytes read, not delivered; its last chunks (<= 2 MiB) may still be in flight.
async function downloadImage(d) {
  act(`Downloading ${d.name}`, async () => {
    const t = await api("POST", "/api/imagetransfers", { disk: { id: d.id }, direction: "download" });
    const url = new URL(t.transfer_url);
    url.searchParams.set("filename", `${d.name.replace(/[^A-Za-z0-9._-]/g, "_").replace(/^\./, "_").slice(0, 240)}.` +
                                     (d.format === "cow" ? "qcow2" : "raw"));
    // The image's size, for knowing when every byte went (a download's transfer has none): one byte's Content-Range.
    let total;
    try {
      const probe = await fetch(url.href, { headers: { Range: "bytes=0-0" } });
      await probe.arrayBuffer();
      total = Number(((probe.headers.get("Content-Range") || "").match(/\/(\d+)$/) || [])[1]);
      if (!probe.ok || !(total >= 0)) throw new Error(`the host answered ${probe.status}`);
    } catch (e) {
      await api("POST", `/api/imagetransfers/${t.id}/cancel`).catch(() => {});
      throw new Error(`the host's transfer endpoint ${url.host} did not answer: ${e.message}`);
    }
    const a = h("a", { href: url.href, download: "" });
    document.body.append(a);
    a.click();
    a.remove();
    for (;;) {
      const x = await get(`/api/imagetransfers/${t.id}`);
      if (x.phase !== "transferring" && x.phase !== "initializing")
        throw new Error(`the transfer ended ${x.phase}${x.error ? ": " + x.error : ""}`);
      if (x.transferred >= total + 1) break;            // the image and the probe's byte
      say(`Downloading ${d.name}: ${total ? Math.min(100, Math.round((100 * x.transferred) / total)) : 0} %`);
      await new Promise((r) => setTimeout(r, 1000));
    }
    await finishTransfer(t);
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
    if (name === "vms") S.lists.templates = (await getAll("/api/templates", "templates")).templates;
  } catch (e) {
    say(e.message, true);
  }
  if (!S.token || S.view !== view) return;      // logged out, or another page asked for, meanwhile
  $("#main").replaceChildren(
    h("h2", { id: "page-title" }, view.title),
    h("div", { id: "forms" }, (view.search ? [nameFilter(view.search)] : []).concat(view.forms ? view.forms() : [])),
    h("div", { id: "dialog", hidden: true }),
    h("section", { id: "data", "data-view": name, "aria-labelledby": "page-title", "aria-busy": "true" }));
  S.view.name = name;
  if (S.navigated) $("#main").focus();             // a keyboard or screen reader user lands on the new page
  S.navigated = true;
  refresh();
}

// Live changes redraw at most once a second: a copy writes its progress many times a second, and each
// redraw costs requests. changed: the tables the stream named since the last redraw, so a page rereads
// only what they touch (null: everything, as on a page load or a new stream).
const REFRESH_MS = 1000;
function refreshSoon(tables) {
  if (S.changed !== null) for (const t of tables) S.changed.add(t);
  if (S.refreshTimer) return;
  const wait = Math.max(0, (S.lastRefresh || 0) + REFRESH_MS - Date.now());
  S.refreshTimer = setTimeout(() => { S.refreshTimer = null; refresh(S.changed); }, wait);
}

// One redraw at a time; changes during one ask for another after it.
async function refresh(changed) {
  if (!S.view || !S.token) return;
  if (changed === undefined) S.changed = null;        // a full reread asked for
  if (S.refreshing) { S.again = true; return; }
  S.refreshing = true;
  try {
    do {
      S.again = false;
      const view = S.view;
      const need = S.changed;
      S.changed = new Set();
      S.lastRefresh = Date.now();
      let node;
      try {
        node = await view.data(need ? (t) => need.has(t) : () => true);
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
