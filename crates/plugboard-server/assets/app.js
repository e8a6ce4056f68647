// Plugboard's dashboard: a small single-page app over the JSON API, with live updates
// from the server-sent event stream. No framework, no build step.
"use strict";

const state = { csrf: "", view: "events", refreshing: null, installLog: [], series: null };

const $ = (sel, root = document) => root.querySelector(sel);
const esc = (v) => String(v ?? "").replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);

function toast(message, error = false) {
  const d = document.createElement("div");
  d.textContent = message;
  if (error) d.className = "err";
  $("#toast").append(d);
  setTimeout(() => d.remove(), error ? 9000 : 4000);
}

async function api(method, path, body, contentType = "application/json") {
  const opts = { method, headers: {}, credentials: "same-origin" };
  if (method !== "GET") opts.headers["X-CSRF-Token"] = state.csrf;
  if (body !== undefined) {
    opts.headers["Content-Type"] = contentType;
    opts.body = contentType === "application/json" ? JSON.stringify(body) : body;
  }
  const res = await fetch(path, opts);
  if (res.status === 401) { location.href = "/login"; throw new Error("session expired"); }
  const text = await res.text();
  const data = text ? JSON.parse(text) : null;
  if (!res.ok) {
    const e = (data && data.error) || { code: String(res.status), message: res.statusText };
    const err = new Error(e.message);
    err.code = e.code;
    err.details = e.details;
    throw err;
  }
  return data;
}

// Plugin rows may come flattened or with the record nested; read either.
const rec = (p) => (p && p.record) ? Object.assign({}, p.record, p) : p;

function badge(text, cls = "") { return `<span class="badge ${cls}">${esc(text)}</span>`; }
function statusBadge(s) { return badge(s, "s-" + s); }
function kindBadge(k) { return k ? badge(k === "encoded" ? "wasm" : k, "k-" + k) : ""; }

function whyOut(p) {
  p = rec(p);
  if (p.status === "stopped") return "stopped by an operator or by repeated failures";
  if (p.status === "held") return "held: waiting for " + ((p.waiting_for || []).join(", ") || "a hard dependency");
  if (p.status === "registered") return "registered, not started";
  if (p.loaded === false) return "no code loaded";
  return "not in the chain";
}

// ---- views ----

const views = {
  async events(main) {
    const events = await api("GET", "/api/events");
    const showAll = location.hash.includes("all");
    const list = events.filter((e) => showAll || (e.plugins || []).length > 0);
    main.innerHTML = `<h2>Events</h2>
      <p class="muted">Each event's chain, in the order its plugins run. Plugins out of the chain are listed below it with the reason.
      <a href="${showAll ? "#/events" : "#/events/all"}">${showAll ? "Only events with plugins" : "Show all " + events.length + " events"}</a></p>
      ${list.map(eventCard).join("") || "<p>No plugins are registered yet.</p>"}`;
    paintCharts(main);
    loadSeries();
  },

  async plugins(main) {
    const plugins = (await api("GET", "/api/plugins")).map(rec);
    main.innerHTML = `<h2>Plugins</h2>
      <table id="plugins"><thead><tr><th>Plugin</th><th>Event</th><th>Prio</th><th>Status</th><th>Kind</th><th>Package</th><th>Failures</th><th>Last error</th><th>Last minutes</th><th>Actions</th></tr></thead>
      <tbody>${plugins.map((p) => `<tr data-plugin="${esc(p.name)}">
        <td><strong>${esc(p.name)}</strong>${(p.depends || []).length ? `<div class="muted">depends (${esc(p.depend_type)}): ${esc(p.depends.join(", "))}</div>` : ""}</td>
        <td>${esc(p.event)}</td><td>${esc(p.priority)}</td><td>${statusBadge(p.status)}</td><td>${kindBadge(p.kind)}</td>
        <td>${esc(p.package || "")}</td><td>${esc(p.failures ?? 0)}</td>
        <td class="muted">${esc(p.last_error ? (p.last_error.kind + ": " + p.last_error.message) : "")}</td>
        <td class="spark-cell" data-series-event="${esc(p.event)}" data-series-plugin="${esc(p.name)}"></td>
        <td class="actions">${["start", "stop", "restart", "enable", "delete", "unregister"].map((a) =>
          `<button type="button" data-action="${a}" data-name="${esc(p.name)}" aria-label="${a} ${esc(p.name)}">${a}</button>`).join("")}</td>
      </tr>`).join("")}</tbody></table>
      <div class="card" style="margin-top:14px"><h3>Dependencies</h3>${graph(plugins)}</div>`;
    paintCharts(main);
    loadSeries();
    main.querySelectorAll("button[data-action]").forEach((b) => b.addEventListener("click", async () => {
      b.disabled = true;
      try {
        await api("POST", `/api/plugins/${encodeURIComponent(b.dataset.name)}/${b.dataset.action}`);
        toast(`${b.dataset.name}: ${b.dataset.action} done`);
      } catch (e) { toast(`${b.dataset.name}: ${e.message}`, true); }
      refresh();
    }));
  },

  async install(main) {
    main.innerHTML = `<h2>Packages</h2>
      <div class="card"><h3>Install or upgrade</h3>
        <form id="upload" class="row"><label>Package file (.pbpkg)<input type="file" id="file" accept=".pbpkg" required></label>
          <label>sha256 (optional)<input type="text" id="upload-sha" size="40"></label>
          <label><span>force</span><input type="checkbox" id="upload-force"></label>
          <button class="primary" type="submit">Upload and install</button></form>
        <form id="by-url" class="row"><label>URL<input type="url" id="url" size="50" required></label>
          <label>sha256<input type="text" id="url-sha" size="40"></label>
          <button class="primary" type="submit">Download and install</button></form>
        <h3>Install log</h3><div id="install-log" class="log" aria-live="polite">${esc(state.installLog.join("\n"))}</div>
      </div>
      <div id="packages"></div>`;
    $("#upload").addEventListener("submit", async (ev) => {
      ev.preventDefault();
      const f = $("#file").files[0];
      if (!f) return;
      const q = new URLSearchParams();
      if ($("#upload-sha").value.trim()) q.set("sha256", $("#upload-sha").value.trim());
      if ($("#upload-force").checked) q.set("force", "true");
      logInstall(`uploading ${f.name} (${f.size} bytes)…`);
      try {
        const bytes = await f.arrayBuffer();
        const done = await installWithConsent(f.name, (grant) => {
          if (grant) q.set("grant", grant);
          return api("POST", "/api/packages?" + q, bytes, "application/octet-stream");
        });
        logInstall(`${done.action}: ${done.name} ${done.version} (plugins ${done.plugins.join(", ")})`);
        toast(`${done.name} ${done.version} installed`);
      } catch (e) { logInstall("refused: " + e.message); toast(e.message, true); }
      refresh();
    });
    $("#by-url").addEventListener("submit", async (ev) => {
      ev.preventDefault();
      const body = { url: $("#url").value.trim() };
      if ($("#url-sha").value.trim()) body.sha256 = $("#url-sha").value.trim();
      logInstall(`downloading ${body.url}…`);
      try {
        const done = await installWithConsent(body.url, (grant) => api("POST", "/api/packages/url", grant ? Object.assign({ grant }, body) : body));
        logInstall(`${done.action}: ${done.name} ${done.version}`);
      } catch (e) { logInstall("refused: " + e.message); toast(e.message, true); }
      refresh();
    });
    await renderPackages();
  },

  async activity(main) {
    const params = new URLSearchParams(location.hash.split("?")[1] || "");
    const q = new URLSearchParams();
    for (const k of ["kind", "status", "subject", "event", "before_id"]) if (params.get(k)) q.set(k, params.get(k));
    q.set("limit", "50");
    const [entries, events, plugins, packages] = await Promise.all([
      api("GET", "/api/activity?" + q),
      api("GET", "/api/events"),
      api("GET", "/api/plugins"),
      api("GET", "/api/packages").catch(() => []),
    ]);
    const option = (name, v) => `<option ${params.get(name) === v ? "selected" : ""}>${esc(v)}</option>`;
    const subjects = [...new Set([...plugins.map((p) => p.name), ...packages.map((p) => p.name)])].sort();
    // The time of day, with the full timestamp on hover: rows are read top-down, newest first.
    const when = (t) => `<time datetime="${esc(t)}" title="${esc(t)}">${esc(t.replace("T", " ").slice(0, 19))}</time>`;
    const row = (a) => {
      const extra = a.extra && typeof a.extra === "object" ? a.extra : {};
      const summary = extra.summary || `${a.kind} ${a.action}`;
      const { summary: _, ...details } = extra;
      const folded = Object.keys(details).length
        ? `<details><summary>details</summary><pre>${esc(JSON.stringify(details, null, 2))}</pre></details>` : "";
      return `<tr class="a-${esc(a.status)}"><td>${when(a.created_at)}</td>
        <td class="what">${esc(summary)}${folded}</td>
        <td>${a.subject ? `<a href="#/activity?subject=${encodeURIComponent(a.subject)}">${esc(a.subject)}</a>` : ""}
          ${a.section_id ? `<div class="muted">${esc(a.section_id)}</div>` : ""}</td>
        <td>${badge(a.kind)} ${badge(a.status, a.status === "error" || a.status === "throw" ? "s-stopped" : a.status === "warning" ? "s-held" : "")}</td></tr>`;
    };
    main.innerHTML = `<h2>Activity</h2>
      <form id="filters" class="row">
        <label>Kind<select name="kind"><option value="">any</option>${["plugin", "package", "setting", "event", "activity", "installer"].map((k) => option("kind", k)).join("")}</select></label>
        <label>Status<select name="status"><option value="">any</option>${["error", "info", "warning", "report", "throw", "exit"].map((k) => option("status", k)).join("")}</select></label>
        <label>Event<select name="event"><option value="">any</option>${events.map((e) => option("event", e.name)).join("")}</select></label>
        <label>Plugin or package<input type="search" name="subject" list="subjects" value="${esc(params.get("subject") || "")}"></label>
        <datalist id="subjects">${subjects.map((n) => `<option value="${esc(n)}">`).join("")}</datalist>
        <button type="submit">Filter</button>
        ${[...params.keys()].some((k) => k !== "n") ? `<a href="#/activity">clear</a>` : ""}</form>
      <table id="activity"><colgroup><col class="c-when"><col><col class="c-subject"><col class="c-status"></colgroup>
      <thead><tr><th>When</th><th>What happened</th><th>Subject</th><th>Kind, status</th></tr></thead>
      <tbody id="activity-rows">${entries.length ? entries.map(row).join("") : `<tr><td colspan="4" class="muted">Nothing recorded matches.</td></tr>`}</tbody></table>
      ${entries.length === 50 ? `<p><a href="#/activity?${new URLSearchParams({ ...Object.fromEntries(params), before_id: entries[entries.length - 1].id })}">Older</a></p>` : ""}`;
    $("#filters").addEventListener("submit", (ev) => {
      ev.preventDefault();
      const f = new URLSearchParams(new FormData(ev.target));
      for (const [k, v] of [...f]) if (!v) f.delete(k);
      location.hash = "#/activity?" + f;
    });
    // A filter applies as soon as it is picked.
    for (const sel of main.querySelectorAll("#filters select")) {
      sel.addEventListener("change", () => $("#filters").requestSubmit());
    }
  },

  async settings(main) {
    const [list, packages] = await Promise.all([
      api("GET", "/api/settings"),
      api("GET", "/api/packages").catch(() => []),
    ]);
    const forms = (await Promise.all((packages || []).map((p) =>
      api("GET", `/api/packages/${encodeURIComponent(p.name)}/settings`).then((s) => Object.assign({ package: p.name }, s)).catch(() => null))))
      .filter((s) => s && s.schema && s.schema.properties);
    main.innerHTML = `<h2>Settings</h2>
      ${forms.length ? `<h3>Package settings</h3><p class="muted">Checked against each package's settings schema; its plugins read them on their next call. Secret fields are write-only: stored encrypted, never shown again (leave one empty to keep it).</p>
        <div class="cards">${forms.map(settingsForm).join("")}</div>` : ""}
      <h3>All settings</h3>
      <table><thead><tr><th>Name</th><th>Configs</th><th></th></tr></thead><tbody>
      ${list.map((s) => `<tr><td>${esc(s.name)}</td><td><code>${esc(JSON.stringify(s.configs))}</code>${(s.secrets || []).map((f) => ` ${badge(f + ": set (secret)", "k-encoded")}`).join("")}</td>
        <td><button type="button" data-edit="${esc(s.name)}">Edit</button> <button type="button" data-del="${esc(s.name)}">Delete</button></td></tr>`).join("")}
      </tbody></table>
      <form id="setting" class="card" style="margin-top:14px"><h3>Create or replace</h3>
        <p class="muted">A package's or plugin's name sets that package's plugin settings (checked against its settings schema; plugins read them on their next call); <code>installer</code> sets the install rules; any other name is a setting of the host's own. Secret fields left out keep their value.</p>
        <div class="row"><label>Name<input type="text" id="setting-name" required minlength="2" maxlength="200"></label></div>
        <label style="display:block">Configs (JSON)<textarea id="setting-configs">{}</textarea></label>
        <button class="primary" type="submit">Save</button></form>`;
    main.querySelectorAll("form[data-package]").forEach((f) => f.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      const s = forms.find((x) => x.package === f.dataset.package);
      const out = f.querySelector(".form-error");
      out.textContent = "";
      let value;
      try { value = readSettingsForm(f, s); } catch (e) { out.textContent = e.message; return; }
      try {
        await api("PUT", "/api/settings/" + encodeURIComponent(s.setting), value);
        toast(`saved the settings of ${s.package}`);
        refresh();
      } catch (e) { out.textContent = e.message; toast(e.message, true); }
    }));
    main.querySelectorAll("[data-edit]").forEach((b) => b.addEventListener("click", () => {
      const s = list.find((x) => x.name === b.dataset.edit);
      $("#setting-name").value = s.name;
      $("#setting-configs").value = JSON.stringify(s.configs, null, 2);
      $("#setting-configs").focus();
    }));
    main.querySelectorAll("[data-del]").forEach((b) => b.addEventListener("click", async () => {
      try { await api("DELETE", "/api/settings/" + encodeURIComponent(b.dataset.del)); toast("deleted"); } catch (e) { toast(e.message, true); }
      refresh();
    }));
    $("#setting").addEventListener("submit", async (ev) => {
      ev.preventDefault();
      let configs;
      try { configs = JSON.parse($("#setting-configs").value); } catch (e) { toast("configs are not JSON: " + e.message, true); return; }
      try { await api("PUT", "/api/settings/" + encodeURIComponent($("#setting-name").value), configs); toast("saved"); } catch (e) { toast(e.message, true); }
      refresh();
    });
  },

  // Each package's key-value data (the `kv` capability): what it holds, each entry's
  // value on demand, and erasing one entry or all of them.
  async data(main) {
    const packages = await api("GET", "/api/packages");
    const prefix = decodeURIComponent((location.hash.split("?prefix=")[1] || ""));
    const pages = await Promise.all(packages.map((p) =>
      api("GET", `/api/kv/${encodeURIComponent(p.name)}?limit=200${prefix ? "&prefix=" + encodeURIComponent(prefix) : ""}`).catch(() => null)));
    const held = pages.filter((pg) => pg && (pg.usage.keys > 0 || pg.entries.length));
    const when = (ms) => ms ? new Date(ms).toLocaleString() : "never";
    main.innerHTML = `<h2>Data</h2>
      <p class="muted">What packages keep with the <code>kv</code> capability, in this host's database (shared by every host on it). Uninstalling a package erases its data unless kept.</p>
      <form id="kv-filter" class="row"><label>Keys starting with<input type="search" id="kv-prefix" value="${esc(prefix)}"></label><button type="submit">Filter</button></form>
      ${held.map((pg) => `<section class="card" data-kv="${esc(pg.package)}"><h3>${esc(pg.package)} <span class="muted">${pg.usage.keys} keys, ${pg.usage.bytes} bytes</span>
        <button type="button" data-kv-clear="${esc(pg.package)}">Erase all</button></h3>
        <table><thead><tr><th>Key</th><th>Size</th><th>Expires</th><th>Written</th><th></th></tr></thead><tbody>
        ${pg.entries.map((e) => `<tr data-key="${esc(e.key)}"><td><code>${esc(e.key)}</code><pre class="kv-value" hidden></pre></td><td>${e.size}</td><td>${esc(when(e.expires_at_ms))}</td>
          <td>${esc(new Date(e.updated_at).toLocaleString())}</td>
          <td class="actions"><button type="button" data-kv-show>Show</button> <button type="button" data-kv-del>Delete</button></td></tr>`).join("") || '<tr><td colspan="5">No entries match.</td></tr>'}
        </tbody></table></section>`).join("") || "<p>No package holds any data.</p>"}`;
    $("#kv-filter").addEventListener("submit", (ev) => {
      ev.preventDefault();
      const v = $("#kv-prefix").value;
      location.hash = "#/data" + (v ? "?prefix=" + encodeURIComponent(v) : "");
    });
    const path = (pkg, key) => `/api/kv/${encodeURIComponent(pkg)}/${encodeURIComponent(key)}`;
    main.querySelectorAll("[data-kv] tr[data-key]").forEach((row) => {
      const pkg = row.closest("[data-kv]").dataset.kv;
      const key = row.dataset.key;
      row.querySelector("[data-kv-show]").addEventListener("click", async () => {
        const pre = row.querySelector(".kv-value");
        try {
          const v = await api("GET", path(pkg, key));
          pre.textContent = v.text !== undefined && v.text !== null ? v.text : "hex: " + v.hex;
          pre.hidden = false;
        } catch (e) { toast(e.message, true); }
      });
      row.querySelector("[data-kv-del]").addEventListener("click", async () => {
        if (!confirm(`Delete ${key} from ${pkg}'s data?`)) return;
        try { await api("DELETE", path(pkg, key)); toast(`deleted ${key}`); } catch (e) { toast(e.message, true); }
        render();
      });
    });
    main.querySelectorAll("[data-kv-clear]").forEach((b) => b.addEventListener("click", async () => {
      if (!confirm(`Erase all of ${b.dataset.kvClear}'s data?`)) return;
      try { const r = await api("DELETE", `/api/kv/${encodeURIComponent(b.dataset.kvClear)}`); toast(`erased ${r.cleared} entries`); } catch (e) { toast(e.message, true); }
      render();
    }));
  },

  async try(main) {
    const events = await api("GET", "/api/events");
    const chosen = decodeURIComponent((location.hash.split("/")[2] || "on_user_after_save_failure"));
    main.innerHTML = `<h2>Try an event</h2>
      <form id="try" class="card"><div class="row"><label>Event<select id="try-event">${events.map((e) =>
        `<option ${e.name === chosen ? "selected" : ""}>${esc(e.name)}</option>`).join("")}</select></label></div>
        <label style="display:block">State (JSON)<textarea id="try-state">${esc(JSON.stringify(sample(chosen), null, 2))}</textarea></label>
        <button class="primary" type="submit">Call</button></form>
      <div id="try-result"></div>`;
    $("#try-event").addEventListener("change", (ev) => { location.hash = "#/try/" + encodeURIComponent(ev.target.value); });
    $("#try").addEventListener("submit", async (ev) => {
      ev.preventDefault();
      let st;
      try { st = JSON.parse($("#try-state").value); } catch (e) { toast("state is not JSON: " + e.message, true); return; }
      try {
        const out = await api("POST", `/api/events/${encodeURIComponent($("#try-event").value)}/call`, { state: st });
        const collected = out.result && Array.isArray(out.result.results) ? out.result : null;
        $("#try-result").innerHTML = `<div class="card"><h3>Trace</h3>
          ${waterfall(out.trace || [])}
          ${collected ? `<h3>Collected</h3><table id="collected"><thead><tr><th>Plugin</th><th>Answer</th></tr></thead><tbody>
            ${collected.results.map((r) => `<tr data-from="${esc(r.plugin)}"><td>${esc(r.plugin)}</td><td><code>${esc(JSON.stringify(r.output))}</code></td></tr>`).join("") || '<tr><td colspan="2" class="muted">No plugin answered.</td></tr>'}
            </tbody></table>${collected.stopped_by ? `<p>Collection ended by <strong>${esc(collected.stopped_by)}</strong>.</p>` : ""}` : ""}
          ${out.halted_by ? `<p>Halted by <strong>${esc(out.halted_by)}</strong>.</p>` : ""}
          ${out.error ? `<p class="outcome-failed">${esc(out.error.message)}</p>` : ""}
          <h3>Result</h3><pre>${esc(JSON.stringify(out.result, null, 2))}</pre></div>`;
      } catch (e) { toast(e.message, true); }
    });
  },
};

// ---- charts ----
// The server samples each event's and plugin's counters (GET /api/series: one point per
// interval, the last minutes); each chart is a small SVG drawn from them, repainted in
// place as samples arrive, so a re-render of the page never waits for them.

function fmtUs(us) {
  if (us === null || us === undefined) return "–";
  if (us < 1000) return `${us.toFixed(us < 10 ? 1 : 0)} µs`;
  if (us < 1e6) return `${(us / 1000).toFixed(us < 1e4 ? 1 : 0)} ms`;
  return `${(us / 1e6).toFixed(1)} s`;
}

const fmtRate = (r) => (r >= 100 ? r.toFixed(0) : r >= 10 ? r.toFixed(1) : r.toFixed(2));

async function loadSeries() {
  try {
    state.series = await api("GET", "/api/series");
  } catch { return; }
  if (state.view === "events" || state.view === "plugins") paintCharts($("#main"));
}

// Polls while a page with charts is shown and visible.
function followSeries() {
  const every = Math.max(2000, (state.series && state.series.interval_ms) || 2000);
  setTimeout(async () => {
    if ((state.view === "events" || state.view === "plugins") && !document.hidden) await loadSeries();
    followSeries();
  }, every);
}

function paintCharts(root) {
  const s = state.series;
  root.querySelectorAll("[data-series-event]").forEach((el) => {
    if (!s) { el.innerHTML = `<span class="muted">charts: waiting for the first samples…</span>`; return; }
    const { seriesEvent: event, seriesPlugin: plugin } = el.dataset;
    const line = plugin
      ? s.plugins.find((l) => l.plugin === plugin && l.event === event)
      : s.events.find((l) => l.event === event);
    el.innerHTML = line ? chart(line, s, !plugin) : `<span class="muted">no calls in the ${window_(s)}</span>`;
  });
}

// What the series cover: the last minutes, or the time since the server started.
function window_(s) {
  const secs = Math.round((s.points * s.interval_ms) / 1000);
  const span = secs >= 120 ? `${Math.round(secs / 60)} minutes` : `${secs} s`;
  return s.points < s.capacity ? `${span} since the server started` : `last ${span}`;
}

// Two small charts on the same time axis (the whole window, now at the right): calls per
// interval with failures in red over them, and p50 (solid) / p99 (dashed) latency.
function chart(line, s, wide) {
  const n = line.calls.length;
  const secs = s.interval_ms / 1000;
  const W = Math.max(s.capacity || n, n), H = 36, x0 = W - n;
  const maxCalls = Math.max(1, ...line.calls, ...line.failures);
  const bar = (v, i, cls) => v ? `<rect x="${x0 + i}" y="${(H - (v / maxCalls) * H).toFixed(2)}" width="0.85" height="${((v / maxCalls) * H).toFixed(2)}" class="${cls}"/>` : "";
  const bars = line.calls.map((c, i) => bar(c, i, "c-calls")).join("") + line.failures.map((f, i) => bar(f, i, "c-fail")).join("");
  const known = (vals) => vals.filter((v) => v !== null);
  const maxUs = Math.max(1, ...known(line.p99_us), ...known(line.p50_us));
  // A step per interval with calls, joined to the next; a gap where an interval had none.
  const path = (vals) => {
    let d = "", pen = false;
    vals.forEach((v, i) => {
      if (v === null) { pen = false; return; }
      const y = (H - 1 - (v / maxUs) * (H - 3)).toFixed(2);
      d += `${pen ? "L" : "M"}${x0 + i},${y}H${x0 + i + 1}`;
      pen = true;
    });
    return d;
  };
  const lastMinute = Math.max(1, Math.round(60 / secs));
  const sum = (vals) => vals.reduce((a, b) => a + b, 0);
  const rate = sum(line.calls.slice(-lastMinute)) / (Math.min(lastMinute, n) * secs);
  const fails = sum(line.failures);
  let at = n - 1;
  while (at > 0 && line.p50_us[at] === null) at--;
  const p50 = line.p50_us[at], p99 = line.p99_us[at];
  const label = `${line.plugin || line.event}: ${fmtRate(rate)} calls/s over the last minute, ${fails} failures in the ${window_(s)}, latest p50 ${fmtUs(p50)}, p99 ${fmtUs(p99)}`;
  const width = wide ? 220 : 120;
  return `<figure class="spark${wide ? " wide" : ""}" role="img" aria-label="${esc(label)}" data-calls="${sum(line.calls)}" data-failures="${fails}">
    <svg class="c-rate" viewBox="0 0 ${W} ${H}" preserveAspectRatio="none" width="${width}" height="${H}" aria-hidden="true"><title>calls per ${secs} s (red: failures), ${esc(window_(s))}; max ${maxCalls}</title>${bars}</svg>
    <svg class="c-lat" viewBox="0 0 ${W} ${H}" preserveAspectRatio="none" width="${width}" height="${H}" aria-hidden="true"><title>latency: p50 (solid), p99 (dashed); top ${esc(fmtUs(maxUs))}</title>
      <path d="${path(line.p99_us)}" class="c-p99" vector-effect="non-scaling-stroke"/><path d="${path(line.p50_us)}" class="c-p50" vector-effect="non-scaling-stroke"/></svg>
    <figcaption><span class="c-n">${fmtRate(rate)}</span> calls/s${fails ? ` · <span class="c-bad">${fails} failed</span>` : ""}<br>p50 ${fmtUs(p50)} · p99 ${fmtUs(p99)}</figcaption>
  </figure>`;
}

// "Try an event": each step as a bar on one time axis (where it started, how long it
// took), with what it changed in the state it was given.
function waterfall(trace) {
  if (!trace.length) return `<p class="muted">No plugin ran: the chain is empty.</p>`;
  // Steps follow one another; a wrapper's bar spans the whole call it ran around.
  const steps = trace.filter((t) => t.outcome !== "wrapped");
  const total = Math.max(steps.reduce((a, t) => a + Number(t.elapsed_us || 0), 0),
    ...trace.map((t) => Number(t.elapsed_us || 0))) || 1;
  let start = 0;
  const rows = trace.map((t, i) => {
    const us = Number(t.elapsed_us || 0);
    const wrapped = t.outcome === "wrapped";
    const left = wrapped ? 0 : (start / total) * 100, width = Math.max(0.6, (us / total) * 100);
    if (!wrapped) start += us;
    const changes = t.changes || [];
    const value = (v) => `<code>${esc(JSON.stringify(v))}</code>`;
    const change = (c) => `<li><code class="wf-path">${esc(c.path || "/")}</code> ${
      c.before === undefined ? `added ${value(c.after)}`
        : c.after === undefined ? `removed (was ${value(c.before)})`
        : `${value(c.before)} → ${value(c.after)}`}</li>`;
    return `<li class="wf-row" data-step="${esc(t.plugin)}">
      <div class="wf-head"><span class="wf-name">${i + 1}. ${esc(t.plugin)}</span>
        <span class="wf-track"><span class="wf-bar wf-${esc(t.outcome)}" style="left:${left.toFixed(2)}%;width:${width.toFixed(2)}%"></span></span>
        <span class="wf-time">${fmtUs(us)}</span>
        <span class="outcome-${esc(t.outcome)}">${esc(t.outcome)}${t.failure ? ": " + esc(t.failure.message) : ""}</span></div>
      ${t.outcome === "failed" ? "" : changes.length
        ? `<ul class="wf-changes">${changes.map(change).join("")}</ul>`
        : `<div class="muted wf-changes">no change to the state</div>`}</li>`;
  });
  return `<ol class="waterfall" aria-label="Each plugin's time and changes, in chain order">${rows.join("")}</ol>
    <p class="muted">Total ${fmtUs(total)} in the plugins.</p>`;
}

function eventCard(e) {
  const plugins = (e.plugins || []).map(rec);
  const byName = Object.fromEntries(plugins.map((p) => [p.name, p]));
  const chain = (e.chain || []).map((n) => byName[n] || { name: n });
  const wrappers = (e.wrappers || []).map((n) => byName[n] || { name: n });
  const collect = e.mode === "collect";
  const out = plugins.filter((p) => !(e.chain || []).includes(p.name) && !(e.wrappers || []).includes(p.name));
  const steps = `<div class="chain" data-chain="${esc(e.name)}">${chain.length ? chain.map((p, i) => `${i ? `<span class="arrow" aria-hidden="true">${collect ? "+" : "→"}</span>` : ""}
      <div class="step ${p.kind === "encoded" ? "wasm" : ""}" data-plugin="${esc(p.name)}"><div class="name">${esc(p.name)}</div>
      ${statusBadge(p.status)}${kindBadge(p.kind)}${badge("prio " + p.priority)}${p.package ? badge("pkg " + p.package) : ""}</div>`).join("")
      : `<span class="muted">empty chain: ${collect ? "a call collects nothing" : "a call returns its state unchanged"}</span>`}</div>`;
  // Each wrapper is drawn as a frame around what it wraps: the outermost is the first.
  const framed = wrappers.reduceRight((inside, w) => `<div class="wrapper" data-wrapper="${esc(w.name)}">
      <div class="wrapper-name">${esc(w.name)} ${statusBadge(w.status)}${kindBadge(w.kind)}${badge("prio " + w.priority)}<span class="muted">runs around</span></div>${inside}</div>`, steps);
  return `<section class="card" data-event="${esc(e.name)}" data-mode="${esc(e.mode || "waterfall")}" aria-label="${esc(e.name)}">
    <h3>${esc(e.name)} <span class="muted">${esc(e.section)}</span> ${collect ? badge("collects", "k-collect") : ""}</h3>
    ${collect ? `<p class="muted">Each plugin is given the same input and answers; a call returns every answer, each with its plugin.</p>` : ""}
    ${framed}
    ${out.length ? `<div class="muted">Out of the chain:</div><div class="chain">${out.map((p) => `<div class="step out" data-out="${esc(p.name)}">
      <div class="name">${esc(p.name)}</div>${statusBadge(p.status)}${kindBadge(p.kind)}<div class="muted">${esc(whyOut(p))}</div></div>`).join("")}</div>` : ""}
    <div class="charts" data-series-event="${esc(e.name)}"></div>
  </section>`;
}

// A layered drawing: each plugin's column is one more than its deepest dependency's.
function graph(plugins) {
  const names = new Set(plugins.map((p) => p.name));
  const depth = {};
  const d = (n, seen = new Set()) => {
    if (depth[n] !== undefined) return depth[n];
    if (seen.has(n)) return 0;
    seen.add(n);
    const p = plugins.find((x) => x.name === n);
    const deps = (p && p.depends || []).filter((x) => names.has(x));
    return (depth[n] = deps.length ? 1 + Math.max(...deps.map((x) => d(x, seen))) : 0);
  };
  plugins.forEach((p) => d(p.name));
  const cols = {};
  plugins.forEach((p) => (cols[depth[p.name]] = cols[depth[p.name]] || []).push(p));
  const pos = {};
  const W = 190, H = 44;
  Object.entries(cols).forEach(([c, ps]) => ps.forEach((p, i) => (pos[p.name] = { x: 10 + c * W, y: 10 + i * H })));
  const width = 20 + (Object.keys(cols).length || 1) * W, height = 20 + Math.max(1, ...Object.values(cols).map((c) => c.length)) * H;
  const edges = plugins.flatMap((p) => (p.depends || []).filter((x) => pos[x]).map((x) => {
    const a = pos[x], b = pos[p.name];
    return `<line x1="${a.x + 150}" y1="${a.y + 15}" x2="${b.x}" y2="${b.y + 15}" stroke="#888" ${p.depend_type === "soft" ? 'stroke-dasharray="4 3"' : ""} marker-end="url(#arr)"/>`;
  }));
  const nodes = plugins.map((p) => {
    const { x, y } = pos[p.name];
    const color = p.status === "stopped" ? "#c4302b" : p.status === "held" ? "#9a6700" : (p.status === "started" || p.status === "restarted") ? "#1a7f37" : "#5b6470";
    return `<g><rect x="${x}" y="${y}" width="150" height="30" rx="5" fill="#fff" stroke="${color}" stroke-width="2"/><text x="${x + 8}" y="${y + 19}">${esc(p.name.length > 20 ? p.name.slice(0, 19) + "…" : p.name)}</text></g>`;
  });
  return `<svg role="img" aria-label="Plugin dependency graph: arrows point from a dependency to its dependent; dashed arrows are soft dependencies" width="${width}" height="${height}">
    <defs><marker id="arr" markerWidth="8" markerHeight="8" refX="8" refY="4" orient="auto"><path d="M0,0 L8,4 L0,8 z" fill="#888"/></marker></defs>
    ${edges.join("")}${nodes.join("")}</svg>
    <p class="muted">Solid: hard dependency (held while it is not running). Dashed: soft (only orders the chain).</p>`;
}

async function renderPackages() {
  const box = $("#packages");
  if (!box) return;
  const [packages, outdated, grants] = await Promise.all([
    api("GET", "/api/packages"),
    api("GET", "/api/packages/outdated").catch(() => []),
    api("GET", "/api/grants").catch(() => []),
  ]);
  const newer = Object.fromEntries((outdated || []).map((o) => [o.name, o.latest]));
  const granted = Object.fromEntries((grants || []).map((g) => [g.package, g]));
  // One chip per capability item (`kv`, `http=https://…`): granted ones revoke, missing ones grant.
  const items = (text) => (text ? text.split(",") : []);
  const caps = (name) => {
    const g = granted[name];
    if (!g || (!g.granted && !g.missing)) return '<span class="muted">none</span>';
    return items(g.granted).map((c) => `<span class="cap">${esc(c)} <button type="button" data-revoke="${esc(name)}" data-cap="${esc(c)}" title="Revoke ${esc(c)}">revoke</button></span>`).join(" ")
      + items(g.missing).map((c) => `<span class="cap missing">${esc(c)} (not granted) <button type="button" data-grant="${esc(name)}" data-cap="${esc(c)}">grant</button></span>`).join(" ");
  };
  box.innerHTML = `<table><thead><tr><th>Package</th><th>Version</th><th>Previous</th><th>Plugins</th><th>Capabilities</th><th>State</th><th></th></tr></thead><tbody>
    ${packages.map((p) => `<tr data-package="${esc(p.name)}"><td><strong>${esc(p.name)}</strong><div class="muted">${esc(p.description)}</div></td>
      <td>${esc(p.version)}${newer[p.name] ? ` ${badge("update available: " + newer[p.name].version, "s-held")}` : ""}</td>
      <td>${esc(p.previous || "")}</td><td>${esc((p.plugins || []).join(", "))}</td><td class="caps">${caps(p.name)}</td>
      <td>${p.loaded ? badge("loaded", "s-started") : badge("failed", "s-stopped") + `<div class="muted">${esc(p.error || "")}</div>`}</td>
      <td class="actions">${newer[p.name] ? `<button type="button" data-upgrade="${esc(p.name)}">Upgrade</button>` : ""}
        ${p.previous ? `<button type="button" data-rollback="${esc(p.name)}">Roll back</button>` : ""}
        <button type="button" data-uninstall="${esc(p.name)}">Uninstall</button></td></tr>`).join("") || '<tr><td colspan="7">No packages installed.</td></tr>'}
    </tbody></table>`;
  box.querySelectorAll("[data-upgrade]").forEach((b) => b.addEventListener("click", async () => {
    const latest = newer[b.dataset.upgrade];
    logInstall(`upgrading ${b.dataset.upgrade} to ${latest.version} from ${latest.url}…`);
    try {
      const body = { url: latest.url, sha256: latest.sha256 };
      const d = await installWithConsent(`${b.dataset.upgrade} ${latest.version}`, (grant) => api("POST", "/api/packages/url", grant ? Object.assign({ grant }, body) : body));
      logInstall(`${d.action}: ${d.name} ${d.version}`);
    }
    catch (e) { logInstall("refused: " + e.message); toast(e.message, true); }
    refresh();
  }));
  for (const [attr, field, verb] of [["data-revoke", "revoke", "revoked"], ["data-grant", "grant", "granted"]]) {
    box.querySelectorAll(`[${attr}]`).forEach((b) => b.addEventListener("click", async () => {
      const name = b.getAttribute(attr);
      try {
        await api("POST", `/api/packages/${encodeURIComponent(name)}/grants`, { [field]: b.dataset.cap });
        logInstall(`${verb} ${b.dataset.cap} ${field === "grant" ? "to" : "from"} ${name}`);
      } catch (e) { toast(e.message, true); }
      refresh();
    }));
  }
  box.querySelectorAll("[data-rollback]").forEach((b) => b.addEventListener("click", async () => {
    try { const d = await api("POST", `/api/packages/${encodeURIComponent(b.dataset.rollback)}/rollback`); logInstall(`rolled back ${d.name} to ${d.version}`); }
    catch (e) { toast(e.message, true); }
    refresh();
  }));
  box.querySelectorAll("[data-uninstall]").forEach((b) => b.addEventListener("click", async () => {
    if (!confirm(`Uninstall ${b.dataset.uninstall}?`)) return;
    try { await api("DELETE", `/api/packages/${encodeURIComponent(b.dataset.uninstall)}`); logInstall(`uninstalled ${b.dataset.uninstall}`); }
    catch (e) {
      if (e.code === "conflict" || /depend/.test(e.message)) {
        if (confirm(e.message + "\n\nUninstall anyway, holding the dependents' plugins?")) {
          try { await api("DELETE", `/api/packages/${encodeURIComponent(b.dataset.uninstall)}?cascade=true`); logInstall(`uninstalled ${b.dataset.uninstall} (dependents held)`); } catch (e2) { toast(e2.message, true); }
        }
      } else toast(e.message, true);
    }
    refresh();
  }));
}

// The consent step: a package asking for capabilities it is not granted is refused with
// `consent_required`; show what it asks for and, if the operator agrees, send the install
// again with that grant.
function askConsent(what, details) {
  const d = $("#consent");
  $("#consent-what").textContent = `${what} asks to:`;
  $("#consent-list").innerHTML = (details.asks || []).map((a) =>
    `<li><strong>${esc(a.capability)}</strong>: ${esc(a.description)}${a.scope && a.scope.length ? " (" + esc(a.scope.join(", ")) + ")" : ""}</li>`).join("");
  return new Promise((resolve) => {
    d.addEventListener("close", () => resolve(d.returnValue === "grant"), { once: true });
    d.returnValue = "";
    d.showModal();
  });
}

// Runs an install; on `consent_required`, asks, and runs it again with the grant.
async function installWithConsent(what, send) {
  try { return await send(null); }
  catch (e) {
    if (e.code !== "consent_required" || !e.details) throw e;
    logInstall(`${what} asks for: ${e.details.grant}`);
    if (!(await askConsent(what, e.details))) {
      const err = new Error("not installed: the capabilities were not granted");
      err.code = "declined";
      throw err;
    }
    return await send(e.details.grant);
  }
}

function logInstall(line) {
  state.installLog.push(`${new Date().toLocaleTimeString()} ${line}`);
  state.installLog = state.installLog.slice(-200);
  const log = $("#install-log");
  if (log) { log.textContent = state.installLog.join("\n"); log.scrollTop = log.scrollHeight; }
}

function sample(event) {
  const conn = { method: "POST", path: "/signup", headers: { "user-agent": "dashboard" }, peer: null };
  const samples = {
    on_user_after_save_failure: { error: { code: "validation_failed", message: "email has already been taken", fields: { email: ["is taken"] }, details: null },
      ip: "203.0.113.9", endpoint: "html", status: "added", conn, modifier_user: "self", extra: null },
    on_content_before_save: { data: { title: "" }, extra: {} },
    on_content_prepare: { data: { title: "Hello" }, extra: {} },
  };
  return samples[event] || { data: {}, extra: {} };
}

// ---- package settings forms, drawn from a package's settings.schema.json ----

const schemaType = (p) => (Array.isArray(p.type) ? p.type.find((t) => t !== "null") : p.type) || (p.enum ? "enum" : "json");

// One form field per top-level property: select for an enum, checkbox for a boolean,
// number for numbers, password for a secret (write-only), text for strings, JSON otherwise.
function settingsForm(s) {
  const props = s.schema.properties || {};
  const required = new Set(s.schema.required || []);
  const values = s.configs || {};
  const fields = Object.entries(props).map(([name, p]) => {
    const id = `set-${s.package}-${name}`.replace(/[^A-Za-z0-9_-]/g, "_");
    const secret = (s.secret_fields || []).includes(name);
    const help = p.description ? `<span class="muted">${esc(p.description)}</span>` : "";
    const label = `${esc(p.title || name)}${required.has(name) ? " *" : ""}`;
    const v = values[name];
    const type = schemaType(p);
    let input;
    if (secret) {
      const isSet = (s.secrets || []).includes(name);
      input = `<input type="password" id="${id}" data-field="${esc(name)}" data-kind="secret" autocomplete="new-password" placeholder="${isSet ? "set: leave empty to keep" : "not set"}">`
        + (isSet ? `<label class="inline"><input type="checkbox" data-remove="${esc(name)}"> remove</label>` : "");
    } else if (p.enum) {
      input = `<select id="${id}" data-field="${esc(name)}" data-kind="enum">${required.has(name) ? "" : '<option value="">(unset)</option>'}${p.enum.map((o, i) =>
        `<option value="${i}" ${JSON.stringify(o) === JSON.stringify(v) ? "selected" : ""}>${esc(typeof o === "string" ? o : JSON.stringify(o))}</option>`).join("")}</select>`;
    } else if (type === "boolean") {
      input = `<input type="checkbox" id="${id}" data-field="${esc(name)}" data-kind="boolean" ${v === true || (v === undefined && p.default === true) ? "checked" : ""}>`;
    } else if (type === "integer" || type === "number") {
      input = `<input type="number" id="${id}" data-field="${esc(name)}" data-kind="${type}" ${type === "integer" ? 'step="1"' : 'step="any"'} ${p.minimum !== undefined ? `min="${esc(p.minimum)}"` : ""} ${p.maximum !== undefined ? `max="${esc(p.maximum)}"` : ""} value="${esc(v ?? "")}" placeholder="${esc(p.default ?? "")}">`;
    } else if (type === "string") {
      input = `<input type="text" id="${id}" data-field="${esc(name)}" data-kind="string" value="${esc(v ?? "")}" placeholder="${esc(p.default ?? "")}">`;
    } else {
      input = `<textarea id="${id}" data-field="${esc(name)}" data-kind="json" placeholder="JSON">${v === undefined ? "" : esc(JSON.stringify(v, null, 2))}</textarea>`;
    }
    return `<div class="field"><label for="${id}">${label}${secret ? " " + badge("secret", "k-encoded") : ""}</label>${input}${help}</div>`;
  }).join("");
  return `<form class="card settings-form" novalidate data-package="${esc(s.package)}"><h4>${esc(s.package)}</h4>${fields}
    <p class="form-error outcome-failed" role="alert"></p><button class="primary" type="submit">Save ${esc(s.package)}</button></form>`;
}

// The value a form describes: empty optional fields are left out, a secret left empty is
// left out (the server keeps it), a secret marked "remove" is sent as null.
function readSettingsForm(form, s) {
  const props = s.schema.properties || {};
  const out = {};
  form.querySelectorAll("[data-field]").forEach((el) => {
    const name = el.dataset.field;
    const kind = el.dataset.kind;
    if (kind === "boolean") { out[name] = el.checked; return; }
    if (kind === "secret") {
      const remove = form.querySelector(`[data-remove="${CSS.escape(name)}"]`);
      if (remove && remove.checked) out[name] = null;
      else if (el.value !== "") out[name] = el.value;
      return;
    }
    if (el.value === "") return;
    if (kind === "enum") out[name] = props[name].enum[Number(el.value)];
    else if (kind === "integer" || kind === "number") out[name] = Number(el.value);
    else if (kind === "json") {
      try { out[name] = JSON.parse(el.value); } catch (e) { throw new Error(`${name}: not JSON (${e.message})`); }
    } else out[name] = el.value;
  });
  return out;
}

// ---- routing and live updates ----

async function render() {
  const view = (location.hash.replace(/^#\//, "").split(/[/?]/)[0]) || "events";
  state.view = views[view] ? view : "events";
  document.querySelectorAll("nav a").forEach((a) => {
    if (a.dataset.view === state.view) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  });
  const main = $("#main");
  try { await views[state.view](main); } catch (e) { main.innerHTML = `<p class="outcome-failed">${esc(e.message)}</p>`; }
}

// Re-render the current view (debounced), keeping what the user is typing.
function refresh() {
  clearTimeout(state.refreshing);
  state.refreshing = setTimeout(() => {
    const active = document.activeElement;
    // An entry's details the reader opened stay open until they close them.
    if (state.view === "activity" && document.querySelector("#activity details[open]")) return;
    if (active && /INPUT|TEXTAREA|SELECT/.test(active.tagName) && state.view !== "events" && state.view !== "plugins") {
      if (state.view === "install") renderPackages();
      return;
    }
    render();
  }, 150);
}

function connect() {
  const live = $("#live");
  const es = new EventSource("/api/stream");
  es.onopen = () => { live.textContent = "live"; live.classList.add("on"); };
  es.onerror = () => { live.textContent = "reconnecting…"; live.classList.remove("on"); };
  es.addEventListener("change", () => refresh());
  es.addEventListener("activity", () => { if (state.view === "activity") refresh(); });
  // The server checks the package index on a schedule and says when newer versions appear.
  es.addEventListener("outdated", () => { if (state.view === "install") renderPackages(); });
  es.addEventListener("install", (ev) => {
    try {
      const p = JSON.parse(ev.data);
      if (p.received !== undefined) logInstall(`${p.url || "download"}: ${p.received}${p.total ? " / " + p.total : ""} bytes`);
      else logInstall(p.message || ev.data);
    } catch { logInstall(ev.data); }
    if (state.view === "install") renderPackages();
  });
}

window.addEventListener("hashchange", render);
window.addEventListener("DOMContentLoaded", async () => {
  try { state.csrf = (await api("GET", "/api/session")).csrf; } catch { /* redirected to /login */ }
  const lc = $("#logout-csrf");
  if (lc) lc.value = state.csrf;
  connect();
  render();
  followSeries();
});
