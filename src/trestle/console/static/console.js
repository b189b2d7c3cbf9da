// trestle's web console: the Alpine.js components of its pages, on the management API.
// The API key lives in this tab's sessionStorage only; it is sent as `Authorization: Bearer`.
"use strict";

const KEY_ITEM = "trestle.api_key";

class ApiError extends Error {
  constructor(message, status) { super(message); this.status = status; }
}

function storedKey() { return sessionStorage.getItem(KEY_ITEM); }

function goSignIn() {
  const next = location.pathname + location.search;
  location.assign("/console/signin?next=" + encodeURIComponent(next));
}

function errorText(body, res) {
  if (body && body.error && body.error.message) return body.error.message;
  if (body && typeof body.message === "string") return body.message;
  return `${res.status} ${res.statusText}`;
}

// fetch with the key; `json` is sent as a JSON body. A 401 sends the user to sign in.
async function api(path, { json, headers, ...opts } = {}) {
  const h = new Headers(headers || {});
  const key = storedKey();
  if (key) h.set("Authorization", "Bearer " + key);
  if (json !== undefined) {
    h.set("Content-Type", "application/json");
    opts.body = JSON.stringify(json);
  }
  const res = await fetch(path, { ...opts, headers: h });
  if (res.status === 401 && !path.startsWith("/api/endpoints/")) {
    sessionStorage.removeItem(KEY_ITEM);
    goSignIn();
    throw new ApiError("sign in again", 401);
  }
  return res;
}

async function apiJson(path, opts) {
  const res = await api(path, opts);
  const text = await res.text();
  let body = null;
  try { body = text ? JSON.parse(text) : null; } catch (e) { body = null; }
  if (!res.ok) throw new ApiError(errorText(body, res), res.status);
  return body;
}

function when(iso) {
  if (!iso) return "—";
  const d = new Date(iso);
  return isNaN(d) ? iso : d.toLocaleString();
}

function safeNext(raw) {
  return raw && raw.startsWith("/") && !raw.startsWith("//") && !raw.startsWith("/\\") ? raw : "/console/models";
}

// A yes/no question in the page's <dialog>; resolves true when confirmed.
function confirmAction(message) {
  const dialog = document.getElementById("confirm");
  document.getElementById("confirm-text").textContent = message;
  dialog.returnValue = "";
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => resolve(dialog.returnValue === "ok"), { once: true });
    dialog.showModal();
    document.getElementById("confirm-ok").focus();
  });
}

async function copyText(text) {
  try { await navigator.clipboard.writeText(text); } catch (e) { /* not allowed: the text is on screen */ }
}

function queryParam(name) { return new URLSearchParams(location.search).get(name); }

// Resolves once the page may call the API: with a stored key, or on a server without auth.
let sessionReady = null;

document.addEventListener("alpine:init", () => {
  // Alpine's CSP build reads no globals in attributes: what the pages need, as magics
  Alpine.magic("json", () => (value, indent) => JSON.stringify(value, null, indent));
  Alpine.magic("textOf", () => (data) => data.text || JSON.stringify(data));
  const session = Alpine.reactive({ key: storedKey(), open: false });
  session.signOut = () => { sessionStorage.removeItem(KEY_ITEM); session.key = null; goSignIn(); };
  Alpine.store("session", session);
  const onSignIn = location.pathname === "/console/signin";
  sessionReady = (async () => {
    if (onSignIn || storedKey()) return;
    const res = await fetch("/api/v1/models");  // answers without a key only where auth is off
    if (res.ok) { session.open = true; return; }
    goSignIn();
    await new Promise(() => {});  // the page is going away
  })();

  Alpine.data("signin", () => ({
    key: "", error: "", busy: false,
    async init() {
      const res = await fetch("/api/v1/models");
      if (res.ok) location.replace(safeNext(queryParam("next")));
    },
    async submit() {
      this.busy = true; this.error = "";
      try {
        const key = this.key.trim();
        const res = await fetch("/api/v1/models", { headers: { Authorization: "Bearer " + key } });
        if (res.ok) {
          sessionStorage.setItem(KEY_ITEM, key);
          location.assign(safeNext(queryParam("next")));
          return;
        }
        this.error = res.status === 403
          ? "This key may only call models; the console needs a key with the admin scope."
          : res.status === 401 ? "This key is not valid (unknown or revoked)." : `The server answered ${res.status}.`;
      } catch (e) { this.error = "Could not reach the server: " + e.message; }
      finally { this.busy = false; this.key = ""; }
    },
  }));

  Alpine.data("models", () => ({
    models: [], deployments: {}, error: "", loading: true, timer: null,
    async init() { await sessionReady; await this.load(); this.timer = setInterval(() => this.load(), 3000); },
    destroy() { clearInterval(this.timer); },
    async load() {
      try {
        const [m, d] = await Promise.all([apiJson("/api/v1/models"), apiJson("/api/v1/deployments")]);
        this.models = m.models;
        this.deployments = Object.fromEntries(d.deployments.map((x) => [x.id, x]));
        this.error = "";
      } catch (e) { this.error = e.message; } finally { this.loading = false; }
    },
    statusOf(id) { return this.deployments[id] ? this.deployments[id].status : "unknown"; },
    environmentsOf(m) { return Object.entries(m.environments).map(([name, deployment]) => ({ name, deployment })); },
    countFor(modelId) { return Object.values(this.deployments).filter((d) => d.model_id === modelId).length; },
    when,
  }));

  Alpine.data("model", () => ({
    modelId: "", info: null, deployments: [], environments: [], replicas: {}, target: {},
    error: "", notice: "", timer: null,
    async init() {
      this.modelId = this.$el.dataset.modelId;
      await sessionReady; await this.load();
      this.timer = setInterval(() => this.load(), 3000);
    },
    destroy() { clearInterval(this.timer); },
    async load() {
      try {
        const id = encodeURIComponent(this.modelId);
        const [models, deps, envs] = await Promise.all([
          apiJson("/api/v1/models"), apiJson("/api/v1/deployments?model_id=" + id),
          apiJson(`/api/v1/models/${id}/environments`)]);
        this.info = models.models.find((m) => m.id === this.modelId) || null;
        if (!this.info) { this.error = `There is no model ${this.modelId}.`; return; }
        this.deployments = deps.deployments.sort((a, b) => b.created_at.localeCompare(a.created_at));
        this.environments = envs.environments;
        for (const d of this.deployments) if (!this.target[d.id]) this.target[d.id] = "production";
        const details = await Promise.all(this.deployments.map((d) => apiJson("/api/v1/deployments/" + d.id)));
        this.replicas = Object.fromEntries(details.map((d) => [d.id, d.replicas]));
        this.error = "";
      } catch (e) { this.error = e.message; }
    },
    envNames() {
      const names = new Set(["production", "development", ...this.environments.map((e) => e.name)]);
      return [...names];
    },
    replicaText(d) {
      const reps = this.replicas[d.id];
      const scaling = (d.config && d.config.scaling) || {};
      const bounds = scaling.min_replicas !== undefined ? ` (min ${scaling.min_replicas}, max ${scaling.max_replicas})` : "";
      if (!reps || !reps.length) return "none running" + bounds;
      return reps.map((r) => `#${r.index} ${r.state}`).join(", ") + bounds;
    },
    requirementsText(d) {
      const reqs = (d.config && d.config.requirements) || [];
      return reqs.length ? reqs.join(", ") : "—";
    },
    async run(message, path, json, done) {
      if (!(await confirmAction(message))) return;
      this.error = ""; this.notice = "";
      try { await apiJson(path, { method: "POST", json }); this.notice = done; await this.load(); }
      catch (e) { this.error = e.message; }
    },
    promote(d) {
      const env = this.target[d.id] || "production";
      return this.run(`Promote deployment ${d.id} to ${env}? Requests move to it once it is active; the one it replaces drains.`,
        `/api/v1/deployments/${d.id}/promote`, { environment: env }, `${d.id} promoted to ${env}.`);
    },
    act(d, action) {
      return this.run(`${action === "activate" ? "Activate" : "Deactivate"} deployment ${d.id}?`,
        `/api/v1/deployments/${d.id}/${action}`, undefined, `${d.id}: ${action} requested.`);
    },
    rollback(env) {
      return this.run(`Roll ${env} back to the deployment it pointed at before?`,
        `/api/v1/models/${encodeURIComponent(this.modelId)}/environments/${encodeURIComponent(env)}/rollback`,
        undefined, `${env} rolled back.`);
    },
    snippets() {
      const base = location.origin;
      const dep = this.deployments.find((d) => d.environments.includes("production")) || this.deployments[0];
      if (!dep) return [];
      const slug = dep.config && dep.config.engine && dep.config.engine.slug;
      const auth = '-H "Authorization: Api-Key $TRESTLE_API_KEY"';
      if (slug) {
        const body = JSON.stringify({ model: slug, messages: [{ role: "user", content: "Hello!" }] });
        return [
          { title: "curl", code: `curl ${base}/v1/chat/completions \\\n  ${auth} \\\n  -H "Content-Type: application/json" \\\n  -d '${body}'` },
          { title: "Python (openai)", code: `import os\nfrom openai import OpenAI\n\nclient = OpenAI(base_url="${base}/v1", api_key=os.environ["TRESTLE_API_KEY"])\nanswer = client.chat.completions.create(\n    model="${slug}",\n    messages=[{"role": "user", "content": "Hello!"}],\n)\nprint(answer.choices[0].message.content)` },
        ];
      }
      const target = dep.environments.includes("production") ? "production" : `deployment/${dep.id}`;
      const url = `${base}/model/${this.modelId}/${target}/predict`;
      return [
        { title: "curl", code: `curl ${url} \\\n  ${auth} \\\n  -H "Content-Type: application/json" \\\n  -d '{"text": "hello"}'` },
        { title: "Python (httpx)", code: `import os\nimport httpx\n\nanswer = httpx.post(\n    "${url}",\n    headers={"Authorization": f"Api-Key {os.environ['TRESTLE_API_KEY']}"},\n    json={"text": "hello"},\n)\nprint(answer.json())` },
      ];
    },
    copy: copyText,
    when,
  }));

  for (const [name, factory] of Object.entries(window.consolePages || {})) Alpine.data(name, factory);
});
