// The prompt-endpoints page: list, edit (each save is a new version), create, and try one.
"use strict";

const SPEC_FIELDS = ["name", "model", "messages", "prompt", "defaults", "search"];
const EXAMPLE_SPEC = {
  name: "support-answer",
  model: "HuggingFaceTB/SmolLM2-135M-Instruct",
  messages: [{ role: "system", content: "Answer from these notes:\n{{ notes }}" }, { role: "user", content: "{{ question }}" }],
  defaults: { max_tokens: 64 },
  search: [],
};

window.consolePages = window.consolePages || {};
window.consolePages.endpoints = () => ({
  endpoints: [], current: null, editing: false, spec: "", values: {}, maxTokens: 64,
  answer: null, trying: false, error: "", notice: "",
  async init() { await sessionReady; await this.load(); },
  async load() {
    try { this.endpoints = (await apiJson("/api/v1/endpoints")).endpoints; } catch (e) { this.error = e.message; }
  },
  open(e) {
    this.current = e; this.editing = true; this.answer = null; this.notice = ""; this.error = "";
    const spec = {};
    for (const f of SPEC_FIELDS) if (e[f] !== null && e[f] !== undefined) spec[f] = e[f];
    this.spec = JSON.stringify(spec, null, 2);
    this.values = Object.fromEntries(e.variables.map((v) => [v, ""]));
  },
  blank() { this.current = null; this.editing = true; this.answer = null; this.spec = JSON.stringify(EXAMPLE_SPEC, null, 2); },
  async save() {
    this.error = ""; this.notice = "";
    let body;
    try { body = JSON.parse(this.spec); } catch (e) { this.error = "The definition is not JSON: " + e.message; return; }
    try {
      const saved = this.current
        ? await apiJson(`/api/v1/endpoints/${encodeURIComponent(this.current.id)}`, { method: "PUT", json: body })
        : await apiJson("/api/v1/endpoints", { method: "POST", json: body });
      this.notice = `Saved ${saved.name}, version ${saved.version}.`;
      await this.load();
      this.open(saved);
      this.notice = `Saved ${saved.name}, version ${saved.version}.`;
    } catch (e) { this.error = e.message; }
  },
  async tryIt() {
    this.trying = true; this.error = ""; this.answer = null;
    try {
      const body = { values: this.values };
      if (this.maxTokens) body.max_tokens = Number(this.maxTokens);
      this.answer = await apiJson(`/api/endpoints/${encodeURIComponent(this.current.id)}/completions`, { method: "POST", json: body });
    } catch (e) { this.error = e.message; } finally { this.trying = false; }
  },
  when,
});
