// The datasets page: list and create datasets, upload files (with progress), documents, rows, search.
"use strict";

// POST a FormData with the key, reporting upload progress (fetch cannot); resolves {status, body}.
function uploadForm(path, form, onProgress) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open("POST", path);
    const key = storedKey();
    if (key) xhr.setRequestHeader("Authorization", "Bearer " + key);
    xhr.upload.onprogress = (e) => { if (e.lengthComputable) onProgress(Math.round((100 * e.loaded) / e.total)); };
    xhr.onload = () => {
      let body = null; try { body = JSON.parse(xhr.responseText); } catch (e) { /* not JSON */ }
      resolve({ status: xhr.status, body });
    };
    xhr.onerror = () => reject(new Error("the upload failed (connection lost)"));
    xhr.send(form);
  });
}

window.consolePages = window.consolePages || {};
window.consolePages.datasets = () => ({
  datasets: [], current: null, documents: [], rows: [], nextAfter: null, results: [],
  newName: "", query: "", topK: 5, alpha: 0.5, chunkSize: "", uploading: false, progress: 0,
  error: "", notice: "",
  async init() {
    await sessionReady; await this.load();
    const wanted = queryParam("dataset");
    const found = this.datasets.find((d) => d.id === wanted || d.name === wanted);
    if (found) await this.open(found);
  },
  async load() {
    try { this.datasets = (await apiJson("/api/datasets")).data; } catch (e) { this.error = e.message; }
  },
  async create() {
    this.error = "";
    try {
      const d = await apiJson("/api/datasets", { method: "POST", json: { name: this.newName.trim() } });
      this.newName = ""; await this.load(); await this.open(d);
    } catch (e) { this.error = e.message; }
  },
  path(rest = "") { return `/api/datasets/${encodeURIComponent(this.current.id)}${rest}`; },
  async open(d) {
    this.current = d; this.results = []; this.error = "";
    await this.refresh();
  },
  async refresh() {
    try {
      const [docs, rows, one] = await Promise.all([apiJson(this.path("/documents")), apiJson(this.path("/rows?limit=50")), apiJson(this.path())]);
      this.documents = docs.data; this.rows = rows.data; this.nextAfter = rows.next_after;
      this.current = one;
      const i = this.datasets.findIndex((x) => x.id === one.id);
      if (i >= 0) this.datasets[i] = one;
    } catch (e) { this.error = e.message; }
  },
  async moreRows() {
    try {
      const page = await apiJson(this.path(`/rows?limit=50&after=${this.nextAfter}`));
      this.rows.push(...page.data); this.nextAfter = page.next_after;
    } catch (e) { this.error = e.message; }
  },
  async upload() {
    const files = this.$refs.files.files;
    if (!files.length) return;
    const form = new FormData();
    for (const f of files) form.append("files", f, f.name);
    if (this.chunkSize) form.append("chunk_size", String(this.chunkSize));
    this.uploading = true; this.progress = 0; this.error = ""; this.notice = "";
    try {
      const { status, body } = await uploadForm(this.path("/upload"), form, (p) => { this.progress = p; });
      if (status === 401) { goSignIn(); return; }
      if (status >= 400) throw new Error(body ? errorText(body, { status, statusText: "" }) : `upload failed (${status})`);
      this.notice = `Uploaded ${body.documents.map((d) => `${d.name} (${d.rows} rows)`).join(", ")}.`;
      this.$refs.files.value = "";
      await this.refresh();
    } catch (e) { this.error = e.message; } finally { this.uploading = false; }
  },
  async search() {
    this.error = "";
    try {
      const body = { query: this.query, top_k: Number(this.topK) || 5, alpha: Number(this.alpha) };
      this.results = (await apiJson(this.path("/search"), { method: "POST", json: body })).results;
      if (!this.results.length) this.notice = "No results.";
    } catch (e) { this.error = e.message; }
  },
  when,
});
