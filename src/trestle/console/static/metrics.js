// The metrics page: /metrics (Prometheus text) read every few seconds; rates and latency
// quantiles from the difference between two readings; a short history kept in the page.
"use strict";

// {name: [{labels: {...}, value}]} from the Prometheus text format.
function parsePrometheus(text) {
  const out = {};
  for (const line of text.split("\n")) {
    if (!line || line.startsWith("#")) continue;
    const m = line.match(/^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)/);
    if (!m) continue;
    const labels = {};
    for (const l of (m[2] || "").matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) labels[l[1]] = l[2];
    (out[m[1]] || (out[m[1]] = [])).push({ labels, value: Number(m[3]) });
  }
  return out;
}

function sumOf(samples, keep = () => true) {
  return (samples || []).filter((s) => keep(s.labels)).reduce((a, s) => a + s.value, 0);
}

// The q-quantile of the requests between two readings of a histogram's buckets.
function quantile(q, before, after) {
  const counts = {};
  for (const s of after || []) counts[s.labels.le] = (counts[s.labels.le] || 0) + s.value;
  for (const s of before || []) counts[s.labels.le] = (counts[s.labels.le] || 0) - s.value;
  const bounds = Object.keys(counts).map((le) => [le === "+Inf" ? Infinity : Number(le), counts[le]]).sort((a, b) => a[0] - b[0]);
  const total = bounds.length ? bounds[bounds.length - 1][1] : 0;
  if (total <= 0) return null;
  const rank = q * total;
  let prevBound = 0, prevCount = 0;
  for (const [bound, count] of bounds) {
    if (count >= rank) {
      if (bound === Infinity) return prevBound;
      return prevBound + (bound - prevBound) * ((rank - prevCount) / Math.max(count - prevCount, 1e-9));
    }
    prevBound = bound; prevCount = count;
  }
  return prevBound;
}

window.consolePages = window.consolePages || {};
window.consolePages.metrics = () => ({
  intervalS: 2, keep: 150, error: "", now: {}, timer: null, last: null, history: [],
  async init() {
    await sessionReady;
    await this.read();
    this.timer = setInterval(() => this.read(), this.intervalS * 1000);
  },
  destroy() { clearInterval(this.timer); },
  fmt(v) { return v === null || v === undefined ? "—" : (Math.round(v * 100) / 100).toString(); },
  ms(v) { return v === null || v === undefined ? "—" : `${Math.round(v * 1000)} ms`; },
  async read() {
    try {
      const res = await api("/metrics");
      if (!res.ok) throw new Error(`/metrics answered ${res.status}`);
      const m = parsePrometheus(await res.text());
      const t = performance.now() / 1000;
      const served = (l) => l.kind !== "other";  // not /metrics, /health or the console's pages
      const total = sumOf(m.trestle_requests_total, served);
      const errors = sumOf(m.trestle_requests_total, (l) => served(l) && Number(l.status) >= 500);
      const tokens = sumOf(m.trestle_engine_generated_tokens_total || m.trestle_engine_generated_tokens);
      const point = { t, total, errors, tokens, buckets: (m.trestle_request_duration_seconds_bucket || []).filter((s) => served(s.labels)),
                      running: sumOf(m.trestle_engine_active_sequences), waiting: sumOf(m.trestle_engine_waiting_requests) };
      const prev = this.last;
      this.last = point;
      const now = { total, running: point.running, waiting: point.waiting, rate: null, errors: null, tokens: null, p50: null, p99: null };
      if (prev) {
        const dt = Math.max(t - prev.t, 1e-3);
        now.rate = Math.max(total - prev.total, 0) / dt;
        now.errors = Math.max(errors - prev.errors, 0) / dt;
        now.tokens = Math.max(tokens - prev.tokens, 0) / dt;
        now.p50 = quantile(0.5, prev.buckets, point.buckets);
        now.p99 = quantile(0.99, prev.buckets, point.buckets);
        this.history.push({ label: new Date().toLocaleTimeString(), ...now });
        if (this.history.length > this.keep) this.history.shift();
        this.draw();
      }
      this.now = now;
      this.error = "";
    } catch (e) { this.error = e.message; }
  },
  draw() {
    if (!window.Chart) return;
    const h = Alpine.raw(this.history);
    const labels = h.map((p) => p.label);
    const line = (ref, series) => {
      const canvas = this.$refs[ref];
      const datasets = series.map(([label, key, scale]) => ({ label, data: h.map((p) => (p[key] === null ? null : p[key] * (scale || 1))), spanGaps: true, pointRadius: 0 }));
      const chart = Chart.getChart(canvas);
      if (chart) { chart.data.labels = labels; chart.data.datasets.forEach((d, i) => { d.data = datasets[i].data; }); chart.update("none"); return; }
      new Chart(canvas, { type: "line", data: { labels, datasets },
        options: { animation: false, responsive: true, maintainAspectRatio: false, scales: { y: { beginAtZero: true } } } });
    };
    line("traffic", [["requests/s", "rate"], ["errors/s", "errors"]]);
    line("latency", [["p50", "p50", 1000], ["p99", "p99", 1000]]);
    line("tokens", [["tokens/s", "tokens"]]);
    line("sequences", [["running", "running"], ["waiting", "waiting"]]);
  },
});
