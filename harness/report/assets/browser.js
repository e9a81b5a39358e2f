// The per-sample browser of report.html: filters, pages, and a URL hash that keeps the filters.
(() => {
  const data = (id) => JSON.parse(document.getElementById(id).textContent);
  const samples = data("samples-data");
  const thumbs = data("thumbs-data");
  const PAGE = 20;
  const filters = { dataset: "f-dataset", qtype: "f-qtype", outcome: "f-outcome" };
  const select = (key) => document.getElementById(filters[key]);
  let page = 0;

  for (const key of ["dataset", "qtype"]) {
    for (const value of [...new Set(samples.map((s) => s[key]))].sort()) {
      select(key).add(new Option(value, value));
    }
  }

  const el = (tag, attrs = {}, ...children) => {
    const node = Object.assign(document.createElement(tag), attrs);
    node.append(...children.filter((c) => c !== null && c !== undefined));
    return node;
  };

  function card(s) {
    const image = thumbs[s.image]
      ? el("img", { className: "thumb", src: thumbs[s.image], alt: s.image })
      : el("div", { className: "placeholder" }, "no thumbnail");
    const options = Object.entries(s.options).map(([k, v]) => `${k}) ${v}`).join("\n");
    const order = s.order ? ` · shown order of the original options: ${s.order.join(", ")}` : "";
    return el("div", { className: "sample" }, image, el("div", {},
      el("div", { className: "meta" }, `${s.id} · ${s.dataset} · ${s.qtype} `,
        el("span", { className: `badge ${s.outcome}` }, s.outcome)),
      el("div", {}, "gold ", el("b", {}, s.gold ?? "–"), " · extracted ",
        el("b", { className: "extracted" }, s.extracted ?? "none"), " · rule ",
        el("code", {}, s.rule ?? "–"), ` · official scorer: ${s.official === null ? "–" :
          s.official ? "correct" : "wrong"}${order}`),
      s.error ? el("pre", { className: "error" }, s.error) : null,
      el("details", {}, el("summary", {}, "exact prompt"), el("pre", {}, s.prompt || options)),
      el("div", { className: "meta" }, "raw response"),
      el("pre", { className: "response" }, s.response ?? "(no response)")));
  }

  function matching() {
    return samples.filter((s) => Object.keys(filters).every((key) => {
      const want = select(key).value;
      return !want || s[key] === want;
    }));
  }

  function render() {
    const hits = matching();
    const pages = Math.max(1, Math.ceil(hits.length / PAGE));
    page = Math.min(page, pages - 1);
    const list = document.getElementById("samples");
    list.replaceChildren(...hits.slice(page * PAGE, (page + 1) * PAGE).map((s) => {
      const node = card(s);
      Object.assign(node.dataset, { outcome: s.outcome, dataset: s.dataset, qtype: s.qtype });
      return node;
    }));
    document.getElementById("count").textContent =
      `${hits.length} of ${samples.length} samples match`;
    document.getElementById("page").textContent = `page ${page + 1} of ${pages}`;
    const state = new URLSearchParams();
    for (const key of Object.keys(filters)) {
      if (select(key).value) state.set(key, select(key).value);
    }
    if (page) state.set("page", page + 1);
    history.replaceState(null, "", state.toString() ? `#${state}` : location.pathname);
  }

  function fromHash() {
    const state = new URLSearchParams(location.hash.slice(1));
    for (const key of Object.keys(filters)) select(key).value = state.get(key) ?? "";
    page = Math.max(0, (parseInt(state.get("page"), 10) || 1) - 1);
    render();
  }

  window.addEventListener("hashchange", fromHash);
  for (const key of Object.keys(filters)) {
    select(key).addEventListener("change", () => { page = 0; render(); });
  }
  document.getElementById("prev").addEventListener("click", () => {
    page = Math.max(0, page - 1);
    render();
  });
  document.getElementById("next").addEventListener("click", () => { page += 1; render(); });
  fromHash();
})();
