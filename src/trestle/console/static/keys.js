// The keys and usage page: create (the key shown once) and revoke keys; prompt-endpoint usage.
"use strict";

function listOrNull(text) {
  const items = text.split(",").map((s) => s.trim()).filter(Boolean);
  return items.length ? items : null;
}

window.consolePages = window.consolePages || {};
window.consolePages.keys = () => ({
  keys: [], error: "", created: null, form: { name: "", scope: "invoke", models: "", endpoints: "" },
  since: "24h", by: "endpoint", measure: "tokens", totals: null, groups: [], records: [], endpointNames: {},
  async init() { await sessionReady; await this.load(); await this.loadUsage(); },
  async load() {
    try { this.keys = (await apiJson("/api/v1/keys")).keys; } catch (e) { this.error = e.message; }
  },
  async create() {
    this.error = "";
    try {
      const body = { name: this.form.name.trim(), scope: this.form.scope,
                     models: listOrNull(this.form.models), endpoints: listOrNull(this.form.endpoints) };
      const key = await apiJson("/api/v1/keys", { method: "POST", json: body });
      this.created = key.key;  // held by this page only, until "Done"
      this.form = { name: "", scope: "invoke", models: "", endpoints: "" };
      await this.load();
    } catch (e) { this.error = e.message; }
  },
  async revoke(k) {
    if (!(await confirmAction(`Revoke the key ${k.name} (${k.prefix}…)? Requests with it fail from now on.`))) return;
    try { await apiJson(`/api/v1/keys/${encodeURIComponent(k.id)}`, { method: "DELETE" }); await this.load(); }
    catch (e) { this.error = e.message; }
  },
  money(v) { return "$" + Number(v || 0).toFixed(6); },
  limitsOf(k) { return [...(k.models || []), ...(k.endpoints || [])].join(", ") || "—"; },
  async loadUsage() {
    try {
      const [usage, eps] = await Promise.all([
        apiJson(`/api/v1/usage?since=${encodeURIComponent(this.since)}&limit=10000`), apiJson("/api/v1/endpoints")]);
      this.endpointNames = Object.fromEntries(eps.endpoints.map((e) => [e.id, e.name]));
      const keyNames = Object.fromEntries(this.keys.map((k) => [k.id, k.name]));
      this.totals = usage.totals;
      const groups = {};
      for (const r of usage.records) {
        const id = r.endpoint_id + "|" + (r.key_id || "");
        const g = groups[id] || (groups[id] = { endpoint: r.endpoint_id, key: r.key_id || "",
          endpointName: this.endpointNames[r.endpoint_id] || r.endpoint_id,
          keyName: r.key_id ? (keyNames[r.key_id] || r.key_id) : "(auth off)",
          calls: 0, prompt: 0, completion: 0, cost: 0, errors: 0 });
        g.calls += 1; g.prompt += r.prompt_tokens; g.completion += r.completion_tokens;
        g.cost += r.prompt_cost + r.completion_cost; if (r.status !== "ok") g.errors += 1;
      }
      this.groups = Object.values(groups);
      this.records = usage.records;
      this.draw();
    } catch (e) { this.error = e.message; }
  },
  draw() {
    if (!window.Chart) return;
    const keyNames = Object.fromEntries(this.keys.map((k) => [k.id, k.name]));
    const hours = {}, series = {};
    for (const r of Alpine.raw(this.records)) {
      const hour = r.created_at.slice(0, 13) + ":00";
      hours[hour] = true;
      const name = this.by === "key"
        ? (r.key_id ? (keyNames[r.key_id] || r.key_id) : "(auth off)")
        : (this.endpointNames[r.endpoint_id] || r.endpoint_id);
      const s = series[name] || (series[name] = {});
      s[hour] = (s[hour] || 0) + (this.measure === "cost"
        ? r.prompt_cost + r.completion_cost : r.prompt_tokens + r.completion_tokens);
    }
    const labels = Object.keys(hours).sort();
    const datasets = Object.entries(series).map(([label, s]) => ({ label, data: labels.map((h) => s[h] || 0) }));
    const old = Chart.getChart(this.$refs.chart);  // kept out of Alpine's reactive state
    if (old) old.destroy();
    new Chart(this.$refs.chart, { type: "bar", data: { labels, datasets },
      options: { animation: false, responsive: true, maintainAspectRatio: false, scales: { x: { stacked: true }, y: { stacked: true, beginAtZero: true } } } });
  },
  copy: copyText,
  when,
});
