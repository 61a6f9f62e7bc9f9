// Browser tests of the Cairn web view (/ui): headless Debian Chromium driven by
// playwright-core, against a real `cairn serve` that holds the demo's SWE-agent runs.
// run.sh starts the server and sets CAIRN_URL, CAIRN_TOKEN and SCREENSHOTS.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { chromium } from "playwright-core";

const URL_ = process.env.CAIRN_URL;
const TOKEN = process.env.CAIRN_TOKEN;
const SHOTS = process.env.SCREENSHOTS || "target/ui-screenshots";
const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";
assert.ok(URL_, "CAIRN_URL must name the server (run.sh sets it)");
assert.ok(TOKEN, "CAIRN_TOKEN must hold a token of the server (run.sh sets it)");

let context;
let page;
let userDir;
const dialogs = [];
const visited = [];

async function shot(name) {
  fs.mkdirSync(SHOTS, { recursive: true });
  await page.screenshot({ path: path.join(SHOTS, `${name}.png`), fullPage: true });
}

async function api(method, p, body, headers = {}) {
  const r = await fetch(URL_ + p, {
    method,
    headers: { authorization: `Bearer ${TOKEN}`, ...headers },
    body,
  });
  const text = await r.text();
  assert.ok(r.ok, `${method} ${p}: ${r.status} ${text}`);
  return text ? JSON.parse(text) : null;
}

before(async () => {
  userDir = fs.mkdtempSync(path.join(os.tmpdir(), "cairn-ui-chromium-"));
  context = await chromium.launchPersistentContext(userDir, {
    executablePath: CHROMIUM,
    headless: true,
    viewport: { width: 1280, height: 900 },
    args: [
      "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync",
    ],
  });
  page = context.pages()[0] || (await context.newPage());
  page.on("dialog", async (d) => {
    dialogs.push(d.message());
    await d.dismiss();
  });
  page.on("framenavigated", (f) => {
    if (f === page.mainFrame()) visited.push(f.url());
  });
});

after(async () => {
  await context?.close();
  if (userDir) fs.rmSync(userDir, { recursive: true, force: true });
});

test("login takes a token in a form and keeps it in an HttpOnly SameSite=Strict cookie", async () => {
  const first = await page.goto(`${URL_}/ui`);
  assert.match(page.url(), /\/ui\/login\?next=/, "an anonymous visit is sent to the login form");
  assert.equal(first.status(), 200);
  await page.getByLabel("Token").fill("cairn_" + "0".repeat(64));
  await page.getByRole("button", { name: "Log in" }).click();
  await page.waitForSelector("p.error");
  assert.match(await page.textContent("p.error"), /not valid/);
  await page.getByLabel("Token").fill(TOKEN);
  await page.getByRole("button", { name: "Log in" }).click();
  await page.waitForSelector("#sessions");
  assert.equal(new URL(page.url()).pathname, "/ui");
  const cookies = await context.cookies(`${URL_}/ui`);
  const c = cookies.find((x) => x.name === "cairn_ui");
  assert.ok(c, "the login cookie is set");
  assert.equal(c.httpOnly, true);
  assert.equal(c.sameSite, "Strict");
  assert.equal(c.path, "/ui");
  assert.equal(await page.evaluate(() => document.cookie.includes("cairn_ui")), false,
    "scripts cannot read the token");
});

test("every page carries a strict Content-Security-Policy", async () => {
  const r = await page.goto(`${URL_}/ui`);
  const csp = r.headers()["content-security-policy"];
  assert.ok(csp, "CSP header present");
  assert.match(csp, /script-src 'self'/);
  assert.match(csp, /style-src 'self'/);
  assert.doesNotMatch(csp, /unsafe-inline|unsafe-eval/);
  assert.equal(r.headers()["x-content-type-options"], "nosniff");
  assert.equal(await page.locator("script:not([src])").count(), 0, "no inline script");
  assert.equal(await page.locator("[style]").count(), 0, "no inline style");
});

test("the tree shows runs with coloured statuses, and a failed child shows its reason", async () => {
  await page.goto(`${URL_}/ui`);
  const root = page.locator("#sessions > li.session").first();
  await root.waitFor();
  assert.match(await root.textContent(), /demo/i);
  const failed = page.locator("li.session[data-status=failed]").first();
  await failed.waitFor();
  const badge = failed.locator(".badge").first();
  assert.equal(await badge.textContent(), "failed");
  const colour = await badge.evaluate((el) => getComputedStyle(el).color);
  assert.equal(colour, "rgb(164, 14, 38)", "failed is shown in red");
  assert.match(await failed.locator("p.reason").textContent(), /Evaluation failed/);
  await shot("tree");
  await failed.locator("a.name").first().click();
  await page.waitForSelector("#reason");
  assert.match(await page.textContent("#reason"), /Evaluation failed: string indices must be integers/);
  assert.equal(await page.textContent("#status .badge"), "failed");
  assert.ok((await page.locator("#timeline-list li.event").count()) > 0, "the timeline has events");
  assert.ok((await page.locator("table.artifacts tbody tr").count()) > 0, "artifacts are listed");
  await shot("session");
});

test("the filters narrow the tree to failed sessions, in the URL", async () => {
  await page.goto(`${URL_}/ui`);
  await page.getByLabel("failed").check();
  await page.getByRole("button", { name: "Filter" }).click();
  await page.waitForURL(/status=failed/);
  const statuses = await page.locator("#sessions li.session").evaluateAll((els) =>
    els.map((e) => e.getAttribute("data-status")));
  assert.ok(statuses.length > 0);
  assert.ok(statuses.every((s) => s === "failed"), statuses.join(","));
});

test("an artifact is read by parts: load more pages through it", async () => {
  await page.goto(`${URL_}/ui/query?name=evaluation.log&desc=1`);
  const rows = page.locator("#results tbody tr");
  await rows.first().waitFor();
  // The largest log: more than one page of lines.
  const sizes = await rows.evaluateAll((trs) => trs.map((tr) => tr.children[3].textContent));
  const kib = sizes.map((s) => (s.includes("KiB") ? parseFloat(s) * 1024 : parseFloat(s)));
  const big = kib.indexOf(Math.max(...kib));
  await rows.nth(big).locator("td a").first().click();
  await page.waitForSelector("#range");
  const total = Number((await page.textContent("#range")).match(/of (\d+)/)[1]);
  let shown = await page.locator("table.code tbody tr").count();
  assert.ok(shown < total, `the first page (${shown} lines) is not the whole log (${total})`);
  let clicks = 0;
  while (await page.locator("a.load-more").count()) {
    const before = shown;
    await page.locator("a.load-more").click();
    await page.waitForFunction((n) => document.querySelectorAll("table.code tbody tr").length > n, before);
    shown = await page.locator("table.code tbody tr").count();
    clicks += 1;
    assert.ok(clicks < 50, "paging ends");
  }
  assert.ok(clicks >= 1, "there was a next page");
  assert.equal(shown, total, "every line once, in order");
  const last = await page.locator("table.code tbody tr th").last().textContent();
  assert.equal(Number(last), total);
  await shot("artifact");
});

test("without JavaScript, load more is a plain link to the next part", async () => {
  await page.route("**/ui/static/ui.js", (r) => r.abort());
  try {
    await page.goto(`${URL_}/ui/query?name=evaluation.log`);
    const rows = page.locator("#results tbody tr");
    await rows.first().waitFor();
    const sizes = await rows.evaluateAll((trs) => trs.map((tr) => tr.children[3].textContent));
    const big = sizes.findIndex((s) => s.includes("KiB") && parseFloat(s) > 64);
    assert.ok(big >= 0, `a log over 64 KiB (${sizes})`);
    await rows.nth(big).locator("td a").first().click();
    await page.waitForSelector("a.load-more");
    const firstLast = Number(await page.locator("table.code tbody tr th").last().textContent());
    await page.locator("a.load-more").click();
    await page.waitForURL(/line=\d+/);
    const firstNow = Number(await page.locator("table.code tbody tr th").first().textContent());
    assert.equal(firstNow, firstLast + 1, "the next page starts where the last one ended");
  } finally {
    await page.unroute("**/ui/static/ui.js");
  }
});

test("pages fit a phone screen", async () => {
  await page.setViewportSize({ width: 390, height: 844 });
  try {
    for (const p of ["/ui", "/ui/query?name=*.json", "/ui/store"]) {
      await page.goto(URL_ + p);
      const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
      assert.ok(overflow <= 1, `${p} scrolls sideways by ${overflow}px`);
    }
    await page.goto(`${URL_}/ui`);
    await shot("tree-phone");
  } finally {
    await page.setViewportSize({ width: 1280, height: 900 });
  }
});

test("two versions of patch.diff are diffed", async () => {
  await page.goto(`${URL_}/ui/query?name=patch.diff&latest=1`);
  const rows = page.locator("#results tbody tr");
  await rows.first().waitFor();
  // The latest version of a patch.diff that has more than one.
  const versions = await rows.evaluateAll((trs) => trs.map((tr) => Number(tr.children[1].textContent)));
  const top = Math.max(...versions);
  assert.ok(top >= 3, `a patch.diff with three versions (versions: ${versions})`);
  await rows.nth(versions.indexOf(top)).locator("td a").first().click();
  await page.waitForSelector("#h-versions");
  // The first attempt against the last (the demo's runs changed their patch between them).
  await page.locator("select[name=from]").selectOption("1");
  await page.locator("select[name=to]").selectOption(String(top));
  await page.getByRole("button", { name: "Show diff" }).click();
  await page.waitForSelector("#diff-stats");
  assert.match(page.url(), /\/diff\?name=patch.diff&from=\d+&to=\d+/);
  const added = await page.locator("table.diff tr.add").count();
  const removed = await page.locator("table.diff tr.del").count();
  assert.ok(added + removed > 0, "the versions differ");
  assert.match(await page.textContent("#diff-stats"), new RegExp(`\\+${added}`));
  await shot("diff");
});

test("a query from the form is a shareable URL", async () => {
  await page.goto(`${URL_}/ui/query`);
  await page.getByLabel("Name (glob)").fill("*.json");
  await page.getByLabel("latest version of each name only").check();
  await page.getByRole("button", { name: "Run query" }).click();
  await page.waitForSelector("#results");
  const url = page.url();
  assert.match(url, /name=\*\.json|name=%2A\.json/);
  assert.match(url, /latest=1/);
  const names = await page.locator("#results tbody tr td:first-child").allTextContents();
  assert.ok(names.length > 0, "the demo holds JSON artifacts");
  assert.ok(names.every((n) => n.endsWith(".json")), names.join(","));
  await shot("query");
  // The same URL, opened fresh, gives the same results.
  await page.goto(url);
  assert.deepEqual(await page.locator("#results tbody tr td:first-child").allTextContents(), names);
  // A bad glob is a clear error, not a crash.
  await page.goto(`${URL_}/ui/query?name=%5B`);
  assert.match(await page.textContent("#query-error"), /glob|pattern/i);
});

test("a running session's page receives an artifact live", async () => {
  const s = await api("POST", "/v1/sessions", JSON.stringify({ name: "live run", tags: ["ui-test"] }),
    { "content-type": "application/json" });
  await page.goto(`${URL_}/ui/sessions/${s.id}`);
  await page.waitForFunction(() => document.getElementById("live-state")?.textContent.includes("live"));
  const navs = visited.length;
  await api("PUT", `/v1/sessions/${s.id}/artifacts/notes%2Flive.txt?kind=agent_output`, "written while the page is open");
  await page.waitForSelector("#live-events li a");
  assert.match(await page.textContent("#live-events"), /notes\/live\.txt v1/);
  assert.equal(visited.length, navs, "no reload happened");
  await api("POST", `/v1/sessions/${s.id}/fail`, JSON.stringify({ reason: "stopped by the UI test" }),
    { "content-type": "application/json" });
  await page.waitForFunction(() => document.querySelector("#status .badge")?.textContent === "failed");
  await shot("live");
  await page.locator("#live-events li a").first().click();
  await page.waitForSelector("#content");
  assert.match(await page.textContent("#content"), /written while the page is open/);
});

test("an artifact holding a script tag shows as text and runs nothing", async () => {
  const evil = "<script>alert('xss')</script><img src=x onerror=\"alert('img')\">";
  const s = await api("POST", "/v1/sessions",
    JSON.stringify({ name: "<script>alert('name')</script>", tags: ["ui-test"] }),
    { "content-type": "application/json" });
  const a = await api("PUT", `/v1/sessions/${s.id}/artifacts/page.html?kind=tool_result`, evil);
  await page.goto(`${URL_}/ui/sessions/${s.id}`);
  assert.match(await page.textContent("h1"), /<script>alert\('name'\)<\/script>/);
  await page.goto(`${URL_}/ui/sessions/${s.id}/artifacts/${a.id}`);
  await page.waitForSelector("#content");
  assert.ok((await page.textContent("#content")).includes(evil), "the markup is shown as text");
  assert.equal(await page.locator("#content script, #content img").count(), 0);
  await page.goto(`${URL_}/ui/sessions/${s.id}/artifacts/${a.id}?view=json`);
  await page.waitForTimeout(300);
  assert.deepEqual(dialogs, [], "no dialog ever opened");
});

test("the store overview shows stats, ratios and a chart", async () => {
  await page.goto(`${URL_}/ui/store`);
  assert.ok(Number(await page.textContent("#stat-artifacts")) > 0);
  assert.match(await page.textContent("#dedup-ratio"), /^\d+\.\d\d×$/);
  assert.match(await page.textContent("#compression-ratio"), /^\d+\.\d\d×$/);
  assert.equal(await page.locator("figure.chart svg polyline").count(), 2);
  await shot("store");
  assert.ok(visited.every((u) => !u.includes(TOKEN)), "the token never appeared in a URL");
});
