// The playground page: chat with a Model API slug or a bridged deployment, and raw /predict.
"use strict";

// Yields the parsed `data:` payloads of a server-sent event stream, until `[DONE]`.
async function* sseEvents(res) {
  const reader = res.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, { stream: true });
    let cut;
    while ((cut = buffer.search(/\r?\n\r?\n/)) >= 0) {
      const event = buffer.slice(0, cut);
      buffer = buffer.slice(cut).replace(/^\r?\n\r?\n/, "");
      const data = event.split(/\r?\n/).filter((l) => l.startsWith("data:")).map((l) => l.slice(5).trim()).join("\n");
      if (!data) continue;
      if (data === "[DONE]") return;
      yield JSON.parse(data);
    }
  }
}

function numberOrNull(v) { return v === "" || v === null || v === undefined ? null : Number(v); }

window.consolePages = window.consolePages || {};
window.consolePages.playground = () => ({
  targets: [], model: "", system: "", input: "", messages: [], busy: false, error: "",
  stats: null, logprobs: [], toolCalls: [], controller: null,
  alternatives(lp) { return (lp.top_logprobs || []).map((t) => `${JSON.stringify(t.token)} ${t.logprob.toFixed(2)}`).join(", "); },
  p: { temperature: "", top_p: "", top_k: "", max_tokens: "64", seed: "", stop: "", stream: true,
       logprobs: false, top_logprobs: "0", format: "", schema: '{"type": "object", "properties": {"answer": {"type": "string"}}, "required": ["answer"]}', tools: "" },
  customModels: [], predictModel: "", predictEnv: "production", predictBody: '{"text": "hello"}',
  predictAnswer: null, predictStatus: "", predictBusy: false, deployments: [],
  async init() {
    await sessionReady;
    try {
      const [apis, models, deps] = await Promise.all([apiJson("/v1/models"), apiJson("/api/v1/models"), apiJson("/api/v1/deployments")]);
      this.deployments = deps.deployments;
      const engines = new Set(deps.deployments.filter((d) => d.config && d.config.engine).map((d) => d.model_id));
      this.customModels = models.models.filter((m) => !engines.has(m.id));
      this.targets = [
        ...apis.data.map((m) => ({ value: m.id, label: m.id + " (Model API)" })),
        ...this.customModels.map((m) => ({ value: "baseten/" + m.id, label: m.name + " (bridge, " + m.id + ")" })),
      ];
      const wanted = queryParam("model");
      this.model = (wanted && this.targets.some((t) => t.value === wanted)) ? wanted : (this.targets[0] || {}).value || "";
      this.predictModel = (this.customModels[0] || {}).id || "";
    } catch (e) { this.error = e.message; }
  },
  body() {
    const b = { model: this.model, messages: [], stream: !!this.p.stream };
    if (this.system.trim()) b.messages.push({ role: "system", content: this.system });
    b.messages.push(...this.messages.filter((m) => m.role !== "error").map((m) => ({ role: m.role, content: m.content })));
    for (const name of ["temperature", "top_p", "top_k", "max_tokens", "seed"]) {
      const v = numberOrNull(this.p[name]);
      if (v !== null) b[name] = v;
    }
    const stop = this.p.stop.split("\n").filter((s) => s !== "");
    if (stop.length) b.stop = stop;
    if (this.p.logprobs) { b.logprobs = true; b.top_logprobs = Number(this.p.top_logprobs) || 0; }
    if (this.p.format === "json_object") b.response_format = { type: "json_object" };
    if (this.p.format === "json_schema") b.response_format = { type: "json_schema", json_schema: { name: "answer", schema: JSON.parse(this.p.schema) } };
    if (this.p.tools.trim()) b.tools = JSON.parse(this.p.tools);
    if (b.stream) b.stream_options = { include_usage: true };
    return b;
  },
  async send() {
    if (!this.input.trim() || this.busy) return;
    this.error = "";
    this.messages.push({ role: "user", content: this.input });
    this.input = "";
    let body;
    try { body = this.body(); } catch (e) { this.error = "A JSON field does not parse: " + e.message; return; }
    const answer = { role: "assistant", content: "" };
    this.messages.push(answer);
    const reply = this.messages[this.messages.length - 1];  // the reactive copy
    this.busy = true; this.logprobs = []; this.toolCalls = [];
    this.controller = new AbortController();
    const start = performance.now();
    let first = null, usage = null, finish = null;
    try {
      const res = await api("/v1/chat/completions", { method: "POST", json: body, signal: this.controller.signal });
      if (!res.ok) {
        const text = await res.text();
        let parsed = null; try { parsed = JSON.parse(text); } catch (e) { /* not JSON */ }
        throw new Error(errorText(parsed, res));
      }
      if (body.stream) {
        const calls = {};
        for await (const chunk of sseEvents(res)) {
          if (chunk.error) throw new Error(chunk.error.message || JSON.stringify(chunk.error));
          if (chunk.usage) usage = chunk.usage;
          const choice = (chunk.choices || [])[0];
          if (!choice) continue;
          const delta = choice.delta || {};
          if ((delta.content || delta.tool_calls) && first === null) first = performance.now();
          if (delta.content) reply.content += delta.content;
          for (const tc of delta.tool_calls || []) {
            const c = calls[tc.index] || (calls[tc.index] = { id: tc.id, name: "", arguments: "" });
            if (tc.function && tc.function.name) c.name += tc.function.name;
            if (tc.function && tc.function.arguments) c.arguments += tc.function.arguments;
          }
          if (choice.logprobs && choice.logprobs.content) this.logprobs.push(...choice.logprobs.content);
          if (choice.finish_reason) finish = choice.finish_reason;
        }
        this.toolCalls = Object.values(calls);
      } else {
        const data = await res.json();
        first = performance.now();
        const choice = data.choices[0];
        reply.content = choice.message.content || "";
        this.toolCalls = (choice.message.tool_calls || []).map((t) => ({ id: t.id, name: t.function.name, arguments: t.function.arguments }));
        if (choice.logprobs && choice.logprobs.content) this.logprobs = choice.logprobs.content;
        usage = data.usage; finish = choice.finish_reason;
      }
      const end = performance.now();
      this.stats = {
        ttft: first === null ? "—" : `${Math.round(first - start)} ms`,
        total: `${Math.round(end - start)} ms`,
        usage: usage ? `${usage.prompt_tokens} prompt + ${usage.completion_tokens} completion tokens` : "not reported",
        finish: finish || "—",
      };
    } catch (e) {
      if (e.name !== "AbortError") this.error = e.message;
      if (!reply.content) this.messages.pop();
    } finally { this.busy = false; this.controller = null; }
  },
  stop() { if (this.controller) this.controller.abort(); },
  predictEnvs() {
    const deps = this.deployments.filter((d) => d.model_id === this.predictModel);
    const envs = new Set(deps.flatMap((d) => d.environments));
    return envs.size ? [...envs] : ["production"];
  },
  async predict() {
    this.predictBusy = true; this.error = "";
    try {
      JSON.parse(this.predictBody);
      const path = `/model/${encodeURIComponent(this.predictModel)}/environments/${encodeURIComponent(this.predictEnv)}/predict`;
      const res = await api(path, { method: "POST", body: this.predictBody, headers: { "Content-Type": "application/json" } });
      const text = await res.text();
      this.predictStatus = String(res.status);
      try { this.predictAnswer = JSON.stringify(JSON.parse(text), null, 2); } catch (e) { this.predictAnswer = text; }
    } catch (e) { this.error = e instanceof SyntaxError ? "The request body is not JSON: " + e.message : e.message; }
    finally { this.predictBusy = false; }
  },
});
