// The logs page: a deployment's log as JSON lines, followed live, filtered in the page.
"use strict";

const LOG_LEVELS = ["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"];
const LOG_KEEP = 5000;

window.consolePages = window.consolePages || {};
window.consolePages.logs = () => ({
  deployments: [], deployment: "", requestId: "", level: "", follow: true, records: [],
  error: "", streaming: false, controller: null, n: 0,
  async init() {
    this.requestId = queryParam("request_id") || "";
    await sessionReady;
    try {
      const [models, deps] = await Promise.all([apiJson("/api/v1/models"), apiJson("/api/v1/deployments")]);
      this.names = Object.fromEntries(models.models.map((m) => [m.id, m.name]));
      this.deployments = deps.deployments;
      const wanted = queryParam("deployment");
      this.deployment = this.deployments.some((d) => d.id === wanted) ? wanted : (this.deployments[0] || {}).id || "";
      await this.$nextTick();
      this.start();
    } catch (e) { this.error = e.message; }
  },
  destroy() { if (this.controller) this.controller.abort(); },
  clock(t) {
    const d = t ? new Date(t) : null;
    return d && !isNaN(d) ? d.toISOString().slice(11, 23) : "";
  },
  label(d) { return `${(this.names || {})[d.model_id] || d.model_id} / ${d.id} (${d.status})`; },
  shown() {
    const rid = this.requestId.trim();
    const min = LOG_LEVELS.indexOf(this.level);
    return this.records.filter((r) => (!rid || (r.request_id || "").includes(rid))
      && (min < 0 || LOG_LEVELS.indexOf((r.level || "").toUpperCase()) >= min));
  },
  async start() {
    if (this.controller) this.controller.abort();
    this.records = []; this.error = "";
    if (!this.deployment) return;
    const controller = new AbortController();
    this.controller = controller;
    const url = `/api/v1/deployments/${encodeURIComponent(this.deployment)}/logs?format=json&tail=500` + (this.follow ? "&follow=1" : "");
    try {
      const res = await api(url, { signal: controller.signal });
      if (!res.ok) { const t = await res.text(); let b = null; try { b = JSON.parse(t); } catch (e) { /* text */ } throw new Error(errorText(b, res)); }
      this.streaming = this.follow;
      const reader = res.body.getReader();
      const decoder = new TextDecoder();
      let rest = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        rest += decoder.decode(value, { stream: true });
        const lines = rest.split("\n");
        rest = lines.pop();
        const added = [];
        for (const line of lines) {
          if (!line.trim()) continue;
          try { added.push({ ...JSON.parse(line), n: this.n++ }); } catch (e) { added.push({ message: line, source: "log", n: this.n++ }); }
        }
        if (added.length) this.append(added);
      }
    } catch (e) {
      if (e.name !== "AbortError") this.error = e.message;
    } finally { if (this.controller === controller) this.streaming = false; }
  },
  append(added) {
    const box = this.$refs.box;
    const atBottom = box.scrollHeight - box.scrollTop - box.clientHeight < 40;
    this.records.push(...added);
    if (this.records.length > LOG_KEEP) this.records.splice(0, this.records.length - LOG_KEEP);
    if (atBottom) this.$nextTick(() => { box.scrollTop = box.scrollHeight; });
  },
});
