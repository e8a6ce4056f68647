// The dashboard in real headless Chromium: log in, install a package by upload (with the
// consent step) and see it in its event's chain, fill a package's settings form, see and
// erase a package's data, stop a plugin and see the chain change live (from the dashboard
// and from the CLI), fire the demo sign-up failure and see the audit plugin's effect in the
// activity page (one readable line per entry, details folded, filters by event and plugin
// that hold through live updates, a table that fits) and the webhook's post on the demo
// receiver, charts per event and plugin updated live, a trace drawn as a waterfall with
// each step's changes, a wrapper drawn around its chain, a collecting event's answers per
// plugin (and the demo's search box), revoke a capability and see it take effect.
// Screenshots go to the directory given.
//
// usage: node dashboard.mjs BASE_URL TOKEN SHOTS_DIR PACKAGE_FILE
// Protocol with the Rust test driving it: prints `WAIT <what>` and waits for a line on
// stdin before going on; prints `OK` at the end. Any failure exits non-zero.
import { chromium } from "playwright-core";
import { createInterface } from "node:readline";

const [base, token, shots, pkg] = process.argv.slice(2);
const executablePath = process.env.CHROMIUM || "/usr/bin/chromium";
const input = createInterface({ input: process.stdin });
const lines = input[Symbol.asyncIterator]();
const wait = async (what) => { console.log(`WAIT ${what}`); await lines.next(); };
const step = (what) => console.log(`STEP ${what}`);
const shot = (page, name) => page.screenshot({ path: `${shots}/${name}.png`, fullPage: true });

const browser = await chromium.launch({
  executablePath,
  // Generous (the default is 30 s): starting Chromium on a busy machine is slow.
  timeout: 120000,
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});
try {
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  const page = await context.newPage();
  // Each wait only guards against a hang: generous, since on a busy machine Chromium and
  // the server can both be slow (an upload compiles the component before it answers; the
  // Rust test bounds the whole script).
  context.setDefaultTimeout(180000);
  page.on("pageerror", (e) => { console.error("page error:", e.message); process.exitCode = 1; });

  step("login");
  await page.goto(`${base}/`);
  await page.waitForURL(/\/login/);
  await shot(page, "01-login");
  await page.getByLabel(/token/i).fill("wrong-token");
  // Wait for the form's own POST to finish: navigating while it is in flight aborts.
  const [refused] = await Promise.all([
    page.waitForResponse((r) => r.url().endsWith("/login") && r.request().method() === "POST"),
    page.keyboard.press("Enter"),
  ]);
  if (refused.status() !== 401) throw new Error(`a wrong token got ${refused.status()}`);
  await page.waitForLoadState();
  if (!/\/login/.test(page.url())) throw new Error("a wrong token logged in");
  // The refusal page shows the form again.
  await page.getByLabel(/token/i).fill(token);
  await page.keyboard.press("Enter");
  await page.waitForURL(`${base}/`);
  await page.locator("#live.on").waitFor();
  await page.locator('section[data-event="on_user_after_save_failure"]').waitFor();
  await shot(page, "02-events");

  step("install by upload");
  await page.getByRole("link", { name: "Packages" }).click();
  await page.locator("#file").setInputFiles(pkg);
  await page.getByRole("button", { name: "Upload and install" }).click();
  // It asks for the `log` capability: the consent step lists it; nothing is installed
  // until it is granted.
  const consent = page.locator("dialog#consent");
  await consent.locator("li", { hasText: "log" }).waitFor();
  await shot(page, "03a-consent");
  if (await page.locator('tr[data-package="passthrough"]').count() !== 0) throw new Error("installed before consent");
  await consent.getByRole("button", { name: "Grant and install" }).click();
  await page.locator('tr[data-package="passthrough"]').waitFor();
  await page.locator('tr[data-package="passthrough"] .cap', { hasText: "log" }).waitFor();
  await page.locator("#install-log", { hasText: "install: passthrough 1.0.0" }).waitFor();
  await shot(page, "03-installed");
  await page.getByRole("link", { name: "Events" }).click();
  await page.locator('[data-chain="on_content_prepare"] [data-plugin="passthrough"]').waitFor();
  await shot(page, "04-in-chain");

  step("a package's settings form, drawn from its schema: refused with the failing path, then saved; the secret is never shown");
  const secret = "e2e-secret-value-42";
  await page.getByRole("link", { name: "Settings" }).click();
  const form = page.locator('form[data-package="passthrough"]');
  await form.waitFor();
  await form.getByLabel("level *").or(form.getByLabel("level")).fill("0");
  await form.getByRole("button", { name: "Save passthrough" }).click();
  await form.locator(".form-error", { hasText: "/level" }).waitFor();
  await shot(page, "04b-settings-refused");
  await form.getByLabel("level").fill("3");
  await form.getByLabel("mode").selectOption("careful");
  await form.getByLabel("verbose").check();
  await form.getByLabel(/api_key/).fill(secret);
  await form.getByRole("button", { name: "Save passthrough" }).click();
  await page.locator("#toast", { hasText: "saved the settings of passthrough" }).waitFor();
  // Drawn again from the server: the values kept, the secret only said to be set.
  await page.locator('form[data-package="passthrough"] input[type="password"][placeholder^="set"]').waitFor();
  await page.locator("td", { hasText: "package.passthrough" }).waitFor();
  await page.locator("td .badge", { hasText: "api_key: set (secret)" }).waitFor();
  if ((await page.locator('form[data-package="passthrough"] select').inputValue()) !== "1") throw new Error("the mode was not kept");
  if ((await page.content()).includes(secret)) throw new Error("the secret is shown on the page");
  const shown = await page.evaluate(async () => (await fetch("/api/settings")).text());
  if (shown.includes(secret)) throw new Error("the API returned the secret");
  await shot(page, "04c-settings-saved");

  step("a package's data: listed, a value shown, an entry deleted");
  await page.getByRole("link", { name: "Data" }).click();
  const data = page.locator('section[data-kv="passthrough"]');
  await data.locator("tr[data-key]", { hasText: "fail:203.0.113.9" }).waitFor();
  await data.locator('tr[data-key="fail:203.0.113.9"]').getByRole("button", { name: "Show" }).click();
  await data.locator('tr[data-key="fail:203.0.113.9"] pre.kv-value', { hasText: "3" }).waitFor();
  page.once("dialog", (d) => d.accept());
  await data.locator('tr[data-key="fail:198.51.100.4"]').getByRole("button", { name: "Delete" }).click();
  await page.locator("#toast", { hasText: "deleted fail:198.51.100.4" }).waitFor();
  await page.locator('section[data-kv="passthrough"] tr[data-key="fail:198.51.100.4"]').waitFor({ state: "detached" });
  const left = await page.evaluate(async () => (await fetch("/api/kv/passthrough")).json());
  if (left.entries.length !== 1 || left.entries[0].key !== "fail:203.0.113.9") throw new Error("the delete did not take: " + JSON.stringify(left));
  await shot(page, "04d-data");

  step("stop from the dashboard; another tab sees the chain change live");
  const watcher = await context.newPage();
  await watcher.goto(`${base}/#/events`);
  await watcher.locator("#live.on").waitFor();
  const inChain = watcher.locator('[data-chain="on_content_prepare"] [data-plugin="passthrough"]');
  await inChain.waitFor();
  await page.getByRole("link", { name: "Plugins" }).click();
  // Keyboard only: focus the button and press Enter.
  await page.getByRole("button", { name: "stop passthrough" }).focus();
  await page.keyboard.press("Enter");
  await watcher.locator('[data-out="passthrough"]', { hasText: "stopped" }).waitFor();
  if (await inChain.count() !== 0) throw new Error("passthrough is still drawn in the chain");
  await shot(watcher, "05-stopped-live");

  step("a change made by the CLI shows live");
  const audit = watcher.locator('[data-chain="on_user_after_save_failure"] [data-plugin="wasm-audit"]');
  await audit.waitFor();
  await wait("cli-stop wasm-audit");
  await watcher.locator('[data-out="wasm-audit"]').waitFor();
  await shot(watcher, "06-cli-stopped-live");
  await wait("cli-enable wasm-audit");
  await audit.waitFor();

  step("demo sign-up failure shows the audit plugin's effect");
  const demo = await context.newPage();
  await demo.goto(`${base}/demo`);
  await demo.getByLabel(/name/i).first().fill("Ada");
  await demo.getByLabel(/email/i).fill("not-an-email");
  await demo.getByLabel(/password/i).fill("short");
  const [signup] = await Promise.all([
    demo.waitForResponse((r) => r.url().endsWith("/demo/signup")),
    demo.getByRole("button", { name: /sign up/i }).click(),
  ]);
  if (signup.status() !== 422) throw new Error(`the failed sign-up got ${signup.status()}`);
  await demo.waitForLoadState();
  await shot(demo, "07-demo-failure");
  // The activity log writes in batches: look again until the entry is there, for as long
  // as it takes (a busy machine writes later), up to a deadline that only guards against
  // a hang.
  const rows = page.locator("#activity-rows", { hasText: "wasm-audit" });
  const lookUntil = Date.now() + 120000;
  for (let i = 0; ; i++) {
    await page.goto(`${base}/#/activity?kind=event&n=${i}`);
    await page.locator("#activity-rows").waitFor();
    if (await rows.count() > 0) break;
    if (Date.now() > lookUntil) throw new Error("the sign-up's activity entry never showed");
    await page.waitForTimeout(500);
  }
  await shot(page, "08-activity");

  step("activity: one readable line per entry, details folded, filters by event and plugin, a table that fits");
  const event = "on_user_after_save_failure";
  // A hash change re-renders in place: drop the rows shown so far first, so that what is
  // read next is the new page's.
  const openActivity = async (query) => {
    await page.evaluate(() => document.querySelector("#activity-rows")?.remove());
    await page.goto(`${base}/#/activity?${query}`);
    await page.locator("#activity-rows tr").first().waitFor();
  };
  await openActivity(`event=${event}`);
  const texts = await page.locator("#activity-rows tr").allTextContents();
  for (const t of texts) {
    if (!t.includes(event)) throw new Error(`a row not about ${event} under its filter: ${t}`);
    if (/"chain"|event edit/.test(t)) throw new Error(`a chain rebuild recorded: ${t}`);
  }
  // The CLI's stop of wasm-audit above, as one line.
  if (!texts.some((t) => /plugin wasm-audit stopped on on_user_after_save_failure \(was \w+; by stop\)/.test(t))) {
    throw new Error(`no readable line for wasm-audit's stop: ${texts.join("\n")}`);
  }
  const fits = await page.evaluate(() => {
    const t = document.querySelector("#activity");
    return t.getBoundingClientRect().right <= document.documentElement.clientWidth + 1;
  });
  if (!fits) throw new Error("the activity table overflows the page");
  const details = page.locator("#activity details").first();
  if (await details.evaluate((d) => d.open)) throw new Error("details are not folded");
  await details.locator("summary").click();
  await details.locator("pre").waitFor();
  await shot(page, "08b-activity-filtered");
  await details.locator("summary").click();
  // A change on another event is filtered out; one on this event shows.
  const api = (method, path) => fetch(`${base}${path}`, { method, headers: { authorization: `Bearer ${token}` } });
  const stops = page.locator("#activity-rows tr", { hasText: "plugin wasm-audit stopped on on_user_after_save_failure" });
  const stopsBefore = await stops.count();
  for (const [plugin, action] of [["remember_me", "stop"], ["remember_me", "enable"], ["wasm-audit", "stop"]]) {
    const r = await api("POST", `/api/plugins/${plugin}/${action}`);
    if (!r.ok) throw new Error(`${action} ${plugin}: ${r.status} ${await r.text()}`);
  }
  // The log writes in batches, after the change itself is streamed: look again (the
  // filtered page, loaded afresh) until the new row is there; the deadline only guards
  // against a hang.
  const stopUntil = Date.now() + 120000;
  for (let i = 0; ; i++) {
    if (await stops.count() > stopsBefore) break;
    if (Date.now() > stopUntil) throw new Error("wasm-audit's stop never showed under the filter");
    await page.waitForTimeout(500);
    await openActivity(`event=${event}&n=${i}`);
  }
  if (await page.locator("#activity-rows tr", { hasText: "remember_me" }).count() > 0) {
    throw new Error("a change on another event showed under the filter");
  }
  const r = await api("POST", "/api/plugins/wasm-audit/enable");
  if (!r.ok) throw new Error(`enable wasm-audit: ${r.status}`);
  // By plugin (the subject), from the filter's list.
  await openActivity("subject=wasm-audit");
  for (const t of await page.locator("#activity-rows tr").allTextContents()) {
    if (!t.includes("wasm-audit")) throw new Error(`a row not about wasm-audit: ${t}`);
  }
  await shot(page, "08c-activity-plugin");

  step("the webhook example posted the failed sign-up to the demo receiver");
  const hooksUntil = Date.now() + 120000;
  for (;;) {
    await demo.goto(`${base}/demo/hooks`);
    if (await demo.locator("#hooks li", { hasText: "validation_failed" }).count() > 0) break;
    if (Date.now() > hooksUntil) throw new Error("the webhook's post never arrived");
    await demo.waitForTimeout(500);
  }
  await shot(demo, "08b-webhook-received");

  step("try an event shows the trace as a waterfall: each plugin's time and what it changed");
  await page.goto(`${base}/#/try/on_user_after_save_failure`);
  await page.getByRole("button", { name: "Call" }).click();
  const auditStep = page.locator('#try-result .wf-row[data-step="wasm-audit"]');
  await auditStep.waitFor();
  // The audit plugin flags the failed sign-up in the state: its change is listed under it.
  const changed = await auditStep.locator(".wf-changes li").allTextContents();
  if (!changed.length) throw new Error("wasm-audit's step lists no change to the state");
  // Bars sit on one time axis: each starts where the previous one ended.
  const bars = await page.locator("#try-result .wf-bar").evaluateAll((els) => els.map((e) => [parseFloat(e.style.left), parseFloat(e.style.width)]));
  if (bars.length < 2) throw new Error(`a waterfall of ${bars.length} bars`);
  for (let i = 1; i < bars.length; i++) {
    if (bars[i][0] + 0.01 < bars[i - 1][0]) throw new Error(`bar ${i} starts before the one above it: ${JSON.stringify(bars)}`);
  }
  await shot(page, "09-trace");

  step("charts: calls, failures and latency per event and per plugin, updated live");
  // Calls made now are counted in the next sample (every 2 s); the chart repaints itself.
  await page.evaluate(async ([t, from]) => {
    for (let i = 0; i < 20; i++) {
      await fetch("/api/events/on_user_after_save_failure/call", {
        method: "POST", headers: { authorization: `Bearer ${t}`, "content-type": "application/json" },
        // A new address each time: the demo's rate guard halts the chain at a third
        // failure from one address, and the plugins after it would not run.
        body: JSON.stringify({ state: Object.assign(sample("on_user_after_save_failure"), { ip: `198.18.${from}.${i}` }) }),
      });
    }
  }, [token, 1]);
  await page.goto(`${base}/#/events`);
  const eventChart = page.locator('section[data-event="on_user_after_save_failure"] .charts figure.spark');
  await eventChart.waitFor();
  // The calls are drawn once sampled: the page repaints itself.
  await page.waitForFunction(() => {
    const f = document.querySelector('section[data-event="on_user_after_save_failure"] .charts figure.spark');
    return f && Number(f.dataset.calls) >= 20;
  }, null, { polling: 250 });
  const before = Number(await eventChart.getAttribute("data-calls"));
  if (await eventChart.locator(".c-rate rect.c-calls").count() === 0) throw new Error("no bars in the calls chart");
  if (await eventChart.locator(".c-lat path.c-p50").getAttribute("d") === "") throw new Error("no p50 line");
  const label = await eventChart.getAttribute("aria-label");
  if (!/calls\/s over the last minute, \d+ failures in the .*, latest p50 [\d.]+ (µs|ms|s), p99 [\d.]+ (µs|ms|s)$/.test(label)) throw new Error(`chart label: ${label}`);
  await shot(page, "12-event-charts");
  // Live: more calls while the page stays open raise its count without a reload.
  await page.evaluate(async ([t, from]) => {
    for (let i = 0; i < 10; i++) {
      await fetch("/api/events/on_user_after_save_failure/call", {
        method: "POST", headers: { authorization: `Bearer ${t}`, "content-type": "application/json" },
        // A new address each time: the demo's rate guard halts the chain at a third
        // failure from one address, and the plugins after it would not run.
        body: JSON.stringify({ state: Object.assign(sample("on_user_after_save_failure"), { ip: `198.18.${from}.${i}` }) }),
      });
    }
  }, [token, 2]);
  await page.waitForFunction((n) => {
    const f = document.querySelector('section[data-event="on_user_after_save_failure"] .charts figure.spark');
    return f && Number(f.dataset.calls) >= n + 10;
  }, before, { polling: 250 });
  await page.getByRole("link", { name: "Plugins" }).click();
  const pluginChart = page.locator('td[data-series-plugin="wasm-audit"] figure.spark');
  await pluginChart.waitFor();
  if (!(Number(await pluginChart.getAttribute("data-calls")) >= 30)) throw new Error("wasm-audit's chart misses calls");
  await shot(page, "13-plugin-charts");

  step("modes: a wrapper drawn around its chain; a collecting event's answers listed per plugin");
  await page.goto(`${base}/#/events`);
  const frame = page.locator('section[data-event="on_content_prepare"] .wrapper[data-wrapper="timing"]');
  await frame.waitFor();
  if (await frame.locator('[data-chain="on_content_prepare"] [data-plugin="markdown"]').count() !== 1) {
    throw new Error("the wrapper's frame does not hold the chain it wraps");
  }
  await page.locator('section[data-event="on_content_search"][data-mode="collect"] .k-collect').waitFor();
  await page.locator('section[data-event="on_content_search"]').screenshot({ path: `${shots}/14-collecting-event.png` });
  await page.locator('section[data-event="on_content_prepare"]').screenshot({ path: `${shots}/14b-wrapped-chain.png` });
  await page.goto(`${base}/#/try/on_content_search`);
  await page.locator("#try-state").fill(JSON.stringify({ data: { text: "search" }, extra: {} }));
  await page.getByRole("button", { name: "Call" }).click();
  await page.locator('#collected tr[data-from="pages"]').waitFor();
  await page.locator('#collected tr[data-from="site-search"]', { hasText: "Search events" }).waitFor();
  await shot(page, "15-collected");
  // The demo's search box: every plugin's answer, the wasm package's among them.
  await demo.goto(`${base}/demo/search?q=search`);
  await demo.locator('#results li[data-from="site-search"]').waitFor();
  await demo.locator('#results li[data-from="pages"]').waitFor();
  await shot(demo, "16-demo-search");

  step("a revoke takes effect: wasm-audit without the clock fails its next call");
  await page.getByRole("link", { name: "Packages" }).click();
  await page.locator('button[data-revoke="wasm-audit"][data-cap="clock"]').click();
  await page.locator('tr[data-package="wasm-audit"] .cap.missing', { hasText: "clock" }).waitFor();
  await shot(page, "10-revoked");
  await page.goto(`${base}/#/try/on_user_after_save_failure`);
  await page.getByRole("button", { name: "Call" }).click();
  await page.locator("#try-result", { hasText: "clock" }).waitFor();
  await shot(page, "11-revoked-call");
  console.log("OK");
} catch (e) {
  console.error(e);
  process.exitCode = 1;
} finally {
  await browser.close();
  // Stdin keeps the event loop alive: end explicitly, whatever happened.
  input.close();
  process.exit(process.exitCode ?? 0);
}
