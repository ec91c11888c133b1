// evonorm-search dashboard: fills the pages from /api and polls it while searches run.
// Every text from the database goes in through textContent (or escapeHtml for Plotly's
// hover labels), never as HTML.  Styles go in through the CSSOM (element.style), never as a
// style attribute: the Content-Security-Policy (style-src 'self') refuses those.
"use strict";

const POLL_MS = Number(document.body.dataset.pollMs) || 2000;
const MINIMISED = { cost: "bytes moved per element (lower is better)", nodes: "nodes (lower is better)" };

function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attributes)) {
    if (value === undefined || value === null) continue;
    if (key === "text") node.textContent = value;
    else if (key === "dataset") Object.assign(node.dataset, value);
    else if (key === "style") Object.assign(node.style, value);
    else node.setAttribute(key, value);
  }
  for (const child of children) node.append(child);
  return node;
}

function escapeHtml(text) {
  return String(text).replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;")
    .replace(/"/g, "&quot;");
}

function score(value) {
  return value === null || value === undefined ? "–" : Number(value).toFixed(4);
}

function duration(seconds) {
  if (seconds === null || seconds === undefined || !isFinite(seconds)) return "–";
  seconds = Math.max(0, Math.round(seconds));
  const h = Math.floor(seconds / 3600), m = Math.floor((seconds % 3600) / 60), s = seconds % 60;
  return h ? `${h} h ${m} min` : m ? `${m} min ${s} s` : `${s} s`;
}

function localTime(iso) {
  return iso ? new Date(iso).toLocaleString() : "–";
}

// plotly.js loads asynchronously (compiling it takes a while): pages fetch their data meanwhile.
const plotly = new Promise((resolve, reject) => {
  const script = document.getElementById("plotly-js");
  if (window.Plotly || !script) resolve(window.Plotly);
  script?.addEventListener("load", () => resolve(window.Plotly));
  script?.addEventListener("error", () => reject(new Error("plotly.js did not load")));
});
// Beyond this many trained candidates the front plot shows them as a density.
const CLOUD_POINTS = 2000;

const searchUrl = (name) => `/searches/${encodeURIComponent(name)}`;
const candidateUrl = (id) => `/candidates/${id}`;

async function getJSON(url) {
  const response = await fetch(url, { cache: "no-store" });
  const body = await response.json();
  if (!response.ok) throw new Error(body.error || `${response.status} ${url}`);
  return body;
}

// Runs `refresh` now and every POLL_MS; the header says when the page last heard news.
function poll(refresh) {
  const live = document.getElementById("live");
  const tick = async () => {
    try {
      const note = await refresh();
      live.textContent = `${note || "live"} · checked ${new Date().toLocaleTimeString()}`;
      live.classList.remove("down");
    } catch (error) {
      live.textContent = `cannot read the database: ${error.message}`;
      live.classList.add("down");
    }
    setTimeout(tick, POLL_MS);
  };
  return tick();
}

function fillRows(tbody, rows) {
  tbody.replaceChildren(...rows.map((cells) => el("tr", {}, ...cells.map((cell) =>
    cell instanceof Node ? el("td", {}, cell) : el("td", { text: cell })))));
}

// -- the searches page ------------------------------------------------------------------

async function searchesPage() {
  const tbody = document.querySelector("#searches tbody");
  await poll(async () => {
    const rows = await getJSON("/api/searches");
    document.getElementById("empty").hidden = rows.length > 0;
    fillRows(tbody, rows.map((r) => {
      const end = r.status === "running" ? Date.now() : Date.parse(r.finished_at || r.updated_at);
      return [
        el("a", { href: searchUrl(r.name), text: r.name }), r.space, r.strategy, r.status,
        `${r.trained} / ${r.budget}`, String(r.screened), score(r.best && r.best.mean_score),
        localTime(r.created_at), duration((end - Date.parse(r.created_at)) / 1000),
      ];
    }));
    return `${rows.length} searches`;
  });
}

// A click on a plotted candidate (its id in customdata) opens its page.
function openOnClick(plot) {
  if (plot.dataset.bound) return;
  plot.dataset.bound = "1";
  plot.on("plotly_click", (event) => {
    const id = event.points[0] && event.points[0].customdata;
    if (id !== undefined && id !== null) window.location.href = candidateUrl(id);
  });
}

// The points (xs[i], ys[i]) as one marker per occupied cell of a BINS x BINS grid, at the
// mean of its points, its area growing with their number.
function binnedTrace(xs, ys, bins = 60) {
  const range = (values) => {
    const low = Math.min(...values), high = Math.max(...values);
    return [low, high > low ? high - low : 1];
  };
  const [x0, dx] = range(xs), [y0, dy] = range(ys);
  const cells = new Map();
  xs.forEach((x, i) => {
    const key = Math.min(bins - 1, Math.floor(((x - x0) / dx) * bins)) * bins
      + Math.min(bins - 1, Math.floor(((ys[i] - y0) / dy) * bins));
    const cell = cells.get(key) || { n: 0, x: 0, y: 0 };
    cell.n += 1; cell.x += x; cell.y += ys[i];
    cells.set(key, cell);
  });
  const occupied = [...cells.values()];
  return {
    type: "scatter", mode: "markers", name: `trained (${xs.length}, binned)`,
    x: occupied.map((c) => c.x / c.n), y: occupied.map((c) => c.y / c.n),
    text: occupied.map((c) => `${c.n} trained candidates`), hoverinfo: "text",
    marker: { color: "rgba(120,120,120,0.45)", size: occupied.map((c) => Math.min(18, 4 + 2 * Math.sqrt(c.n))) },
  };
}

// -- a search's page --------------------------------------------------------------------

function objectiveValue(point, objective) {
  if (objective === "mean") return point.mean_score;
  if (objective === "cost") return point.bytes_per_element;
  if (objective === "nodes") return point.node_count;
  return point.scores ? point.scores[objective] : undefined;
}

function objectiveLabel(objective) {
  if (objective === "mean") return "mean accuracy";
  return MINIMISED[objective] || `${objective} accuracy`;
}

function hover(point, extra = "") {
  return `${extra}#${point.id}<br>${escapeHtml(point.formula || "")}`;
}

async function searchPage() {
  const name = document.body.dataset.name;
  const api = `/api/searches/${encodeURIComponent(name)}`;
  const selectX = document.getElementById("objective-x");
  const selectY = document.getElementById("objective-y");
  const architectures = document.body.dataset.architectures.split(",");
  const state = { signature: null, points: [] };

  const options = [...architectures, "mean", "cost", "nodes"];
  for (const select of [selectX, selectY]) {
    select.replaceChildren(...options.map((o) => el("option", { value: o, text: o })));
  }
  selectX.value = architectures[0];
  selectY.value = architectures.length > 1 ? architectures[1] : "cost";

  function fetchFront() {
    const x = selectX.value, y = selectY.value;
    const query = `objectives=${encodeURIComponent(x === y ? x : `${x},${y}`)}&baselines=1`;
    return getJSON(`${api}/pareto?${query}`);
  }

  async function drawFront({ front, baselines }) {
    const x = selectX.value, y = selectY.value;
    const has = (p) => [x, y].every((o) => objectiveValue(p, o) !== null
      && objectiveValue(p, o) !== undefined);
    const cloud = state.points.filter(has);
    const frontPoints = front.filter(has).sort((a, b) => objectiveValue(a, x) - objectiveValue(b, x));
    const zoo = baselines.filter((b) => b.scores && has(b));
    const trace = (points, options) => ({
      x: points.map((p) => objectiveValue(p, x)), y: points.map((p) => objectiveValue(p, y)),
      customdata: points.map((p) => p.id), hoverinfo: "text", type: "scatter", ...options,
    });
    // Thousands of SVG markers take most of a second to draw: beyond CLOUD_POINTS the
    // trained candidates are binned, one marker per occupied cell of a grid, sized by how
    // many it holds; the front is drawn point by point.
    const background = cloud.length <= CLOUD_POINTS
      ? trace(cloud, { name: "trained", mode: "markers", text: cloud.map((p) => hover(p)),
        marker: { color: "rgba(120,120,120,0.35)", size: 6 } })
      : binnedTrace(cloud.map((p) => objectiveValue(p, x)), cloud.map((p) => objectiveValue(p, y)));
    const data = [
      background,
      trace(frontPoints, { name: "Pareto front", mode: "lines+markers",
        text: frontPoints.map((p) => hover(p)), line: { shape: "hv", color: "#e8710a" },
        marker: { color: "#e8710a", size: 10, line: { color: "#000", width: 1 } } }),
      trace(zoo, { name: "baselines", mode: "markers+text",
        text: zoo.map((b) => escapeHtml(b.name)), textposition: "top center",
        hovertext: zoo.map((b) => hover(b, `${escapeHtml(b.name)} `)), hoverinfo: "text",
        marker: { color: "#1f77b4", symbol: "diamond", size: 11 } }),
    ];
    const layout = {
      margin: { l: 60, r: 20, t: 10, b: 50 }, hovermode: "closest", uirevision: `${x}/${y}`,
      xaxis: { title: { text: objectiveLabel(x) } }, yaxis: { title: { text: objectiveLabel(y) } },
      legend: { orientation: "h", y: -0.2 },
    };
    const plot = document.getElementById("front-plot");
    await (await plotly).react(plot, data, layout, { displaylogo: false, responsive: true });
    plot.dataset.frontIds = frontPoints.map((p) => p.id).join(",");
    document.getElementById("front-size").textContent =
      `${frontPoints.length} on the front of ${cloud.length} trained`;
    openOnClick(plot);
  }

  function drawStatus(info) {
    document.getElementById("status").textContent = info.status;
    document.getElementById("trained").textContent = info.trained;
    document.getElementById("budget").textContent = info.budget;
    const bar = document.getElementById("trained-bar");
    bar.max = info.budget; bar.value = info.trained;
    document.getElementById("screened").textContent = info.screened;
    document.getElementById("rate").textContent = info.per_minute.toFixed(1);
    document.getElementById("eta").textContent = info.status === "running"
      ? duration(info.eta_s) : info.status;
    const best = info.best;
    document.getElementById("best").replaceChildren(best
      ? el("a", { href: candidateUrl(best.id), text: `${score(best.mean_score)} (#${best.id})` })
      : "–");
    const hours = info.worker_seconds / 3600;
    document.getElementById("worker-hours").textContent = hours.toFixed(2) +
      (info.worker_hours_budget ? ` / ${info.worker_hours_budget}` : "");
    document.getElementById("yield").textContent = info.trained_per_worker_hour === null
      ? "–" : info.trained_per_worker_hour.toFixed(1);
    const spent = Object.values(info.worker_by_fate).reduce((a, b) => a + b, 0);
    const fates = [...Object.entries(info.worker_by_fate),
      ["orchestration", Math.max(info.worker_seconds - spent, 0)]];
    document.querySelector("#worker-time tbody").replaceChildren(...fates.map(([fate, s]) => {
      const share = info.worker_seconds > 0 ? s / info.worker_seconds : 0;
      return el("tr", { dataset: { fate } }, el("td", { text: fate }),
        el("td", { class: "count", text: (s / 3600).toFixed(2) }),
        el("td", {}, el("span", { class: "bar", style: { width: `${(100 * share).toFixed(1)}%` } })));
    }));
    // The stages in the funnel's order, as the server lists them.
    const stages = Object.keys(info.stopped_at).map((stage) => {
      const count = info.stopped_at[stage] || 0;
      const share = info.screened ? count / info.screened : 0;
      const width = `${(100 * share).toFixed(1)}%`;
      return el("tr", { dataset: { stage } }, el("td", { text: stage }),
        el("td", { class: "count", text: String(count) }),
        el("td", {}, el("span", { class: "bar", style: { width } })));
    });
    const tail = [["queued", info.queued], ["running", info.running], ["trained", info.trained]]
      .map(([stage, count]) => el("tr", { dataset: { stage } }, el("td", { text: stage }),
        el("td", { class: "count", text: String(count) }), el("td")));
    document.querySelector("#funnel tbody").replaceChildren(...stages, ...tail);
    fillRows(document.querySelector("#reasons tbody"), info.funnel.slice(0, 10).map((r) =>
      [r.status, r.stage || "–", r.reason || "–", String(r.count)]));
  }

  // Best mean accuracy so far against trained candidates (in birth order), beside the
  // other searches on the space.
  function drawCurve(points, siblings) {
    let best = null;
    const curve = [];  // [trained count, best so far] where the best changed, and the last
    points.forEach((p, i) => {
      const better = p.mean_score !== null && (best === null || p.mean_score > best);
      if (better) best = p.mean_score;
      if (better || i === 0 || i === points.length - 1) curve.push([i + 1, best]);
    });
    const line = (rows, options) => ({ x: rows.map((r) => r[0]), y: rows.map((r) => r[1]),
      type: "scatter", mode: "lines", hoverinfo: "x+y", ...options });
    const data = [
      line(curve, { name: escapeHtml(name), line: { shape: "hv", width: 3 } }),
      ...(points.length > CLOUD_POINTS ? [] : [{
        x: points.map((p, i) => i + 1), y: points.map((p) => p.mean_score), type: "scatter",
        mode: "markers", name: "each trained candidate", customdata: points.map((p) => p.id),
        hoverinfo: "text", text: points.map((p) => `#${p.id} ${score(p.mean_score)}`),
        marker: { color: "rgba(120,120,120,0.45)", size: 5 } }]),
      ...siblings.map((s) => line(s.curve, { name: escapeHtml(s.name),
        line: { shape: "hv", dash: "dot" } })),
    ];
    // A flat curve (the first layer stayed best) would autorange to a sliver around it.
    const values = data.flatMap((trace) => trace.y).filter((v) => v !== null);
    const low = Math.min(...values), high = Math.max(...values);
    const range = values.length && high - low < 1e-3 ? [low - 0.01, high + 0.01] : undefined;
    const plot = document.getElementById("curve-plot");
    return plotly.then((Plotly) => Plotly.react(plot, data, {
      margin: { l: 60, r: 20, t: 10, b: 40 }, hovermode: "closest",
      xaxis: { title: { text: "trained candidates (in birth order)" } },
      yaxis: { title: { text: "best mean accuracy" }, range },
    }, { displaylogo: false, responsive: true })).then(() => openOnClick(plot));
  }

  const redrawFront = async () => drawFront(await fetchFront());
  selectX.addEventListener("change", redrawFront);
  selectY.addEventListener("change", redrawFront);
  await poll(async () => {
    // The plots' data is fetched again only when a candidate was trained (or the search
    // stopped): a rejected candidate changes the counts, not the plots.
    const plots = () => Promise.all([getJSON(`${api}/points`), getJSON(`${api}/siblings`),
      fetchFront()]);
    const known = state.signature;
    let [info, fetched] = await Promise.all([getJSON(api), known === null ? plots() : null]);
    drawStatus(info);
    const signature = JSON.stringify([info.status, info.trained, info.front_size]);
    if (known !== null && signature !== known) fetched = await plots();
    if (fetched) {
      const [points, siblings, front] = fetched;
      state.points = points;
      await Promise.all([drawCurve(points, siblings), drawFront(front)]);
    }
    state.signature = signature;
    if (!state.transferShown) {
      state.transferShown = true;
      drawSearchTransfer(await getJSON(`${api}/transfer`).catch(() => null));
    }
    return info.status === "running" ? "live" : info.status;
  });
}

function drawSearchTransfer(results) {
  // The transfer (`evonorm-search transfer`) per network: each layer's accuracy with its
  // interval, and the comparison fixed in advance.
  document.getElementById("transfer-section").hidden = !results;
  if (!results) return;
  const s = results.settings;
  document.getElementById("transfer-note").textContent = `Trained from scratch for ${s.steps} `
    + `steps on seeds ${results.seeds.join(", ")}: accuracy on slices of the training data that `
    + "no training reads, mean [95% t-interval] over seeds.";
  const tables = [];
  for (const [network, comparison] of Object.entries(results.comparisons)) {
    const table = el("table", { class: "grid compact" },
      el("thead", {}, el("tr", {}, ...[network, "kind", "lr", "transfer-validation",
        "transfer-test", "test", "formula"].map((h) => el("th", { text: h })))),
      el("tbody"));
    fillRows(table.querySelector("tbody"), results.layers.map((l) => {
      const n = l.networks[network];
      return [el("a", { href: candidateUrl(l.id), text: l.label }), l.kind,
        n.learning_rate === null ? "–" : String(n.learning_rate), interval(n.transfer_val.interval),
        interval(n.transfer_test.interval), interval(n.test.interval), l.formula || "–"];
    }));
    tables.push(table);
    if (comparison.comparator !== null) {
      tables.push(el("p", { class: "muted", text: `Comparison fixed in advance: each layer `
        + `the search chose against ${comparison.comparator} (${comparison.rule}), paired on `
        + `transfer-test, Holm-corrected.` }));
      const verdicts = el("table", { class: "grid compact" }, el("thead", {}, el("tr", {},
        ...["layer", "difference", "p (Holm)", "verdict"].map((h) => el("th", { text: h })))),
        el("tbody"));
      fillRows(verdicts.querySelector("tbody"), comparison.results.map((c) => [c.name,
        interval(c.difference), c.p_holm === null ? "–" : Number(c.p_holm).toPrecision(3),
        c.verdict]));
      tables.push(verdicts);
    }
  }
  document.getElementById("transfer-tables").replaceChildren(...tables);
}

// -- a candidate's page -----------------------------------------------------------------

async function candidatePage() {
  const id = document.body.dataset.id;
  const search = document.body.dataset.search;
  const baselines = await getJSON(`/api/searches/${encodeURIComponent(search)}/baselines`)
    .catch(() => []);
  await poll(async () => {
    const c = await getJSON(`/api/candidates/${id}`);
    document.getElementById("formula").textContent = c.formula || "(did not parse)";
    const fate = [["status", c.status], ["stage", c.stage || "–"], ["reason", c.reason || "–"]];
    if (c.detail) fate.push(["detail", c.detail]);
    if (c.duplicate_of !== null) fate.push(["duplicate of",
      el("a", { href: candidateUrl(c.duplicate_of), text: `#${c.duplicate_of}` })]);
    fate.push(["born", `${c.birth} (${localTime(c.created_at)})`]);
    fillRows(document.querySelector("#fate tbody"), fate);
    drawScores(c, baselines);
    drawCompiled(c.compiled);
    drawLineage(c.lineage);
    fillRows(document.querySelector("#evaluations tbody"), c.evaluations.map((e) => [
      e.stage, e.architecture, e.dataset, e.preset, String(e.seed), String(e.steps),
      score(e.accuracy), score(e.loss), e.status, e.seconds.toFixed(1), e.node || "–"]));
    drawTransfer(c.transfer || []);
    return ["queued", "running"].includes(c.status) ? "live" : c.status;
  });
}

function interval(i) {
  // A mean with its 95% t-interval over seeds, as the CLI prints it.
  if (!i) return "–";
  if (i.low === null) return `${score(i.mean)} (n=${i.n})`;
  return `${score(i.mean)} [${score(i.low)}, ${score(i.high)}] (n=${i.n})`;
}

function drawTransfer(transfer) {
  document.getElementById("transfer-section").hidden = !transfer.length;
  fillRows(document.querySelector("#transfer tbody"), transfer.map((t) => [
    t.network, String(t.learning_rate), `${t.completed} of ${t.seeds.length}`,
    interval(t.transfer_val), interval(t.transfer_test), interval(t.test)]));
}

function drawScores(c, baselines) {
  const trained = baselines.filter((b) => b.scores);
  const architectures = Object.keys(c.scores || (trained[0] && trained[0].scores) || {});
  const head = document.querySelector("#scores thead");
  head.replaceChildren(el("tr", {}, el("th", { text: "architecture" }),
    el("th", { text: `#${c.id}` }), ...trained.map((b) => el("th", {},
      el("a", { href: candidateUrl(b.twin || b.id), text: b.name })))));
  const rows = [...architectures, "mean"].map((a) => [a,
    score(a === "mean" ? c.mean_score : (c.scores || {})[a]),
    ...trained.map((b) => score(a === "mean" ? b.mean_score : b.scores[a]))]);
  fillRows(document.querySelector("#scores tbody"), rows);
  document.getElementById("scores-note").textContent = trained.length
    ? "Baselines: the zoo's layers trained on this search's protocol (`baselines evaluate`)."
    : "No baselines were trained on this search's protocol (`evonorm-search baselines evaluate`).";
}

function drawCompiled(compiled) {
  const rows = !compiled ? [["compiled", "no (not trained, or refused before the compile stage)"]]
    : [["target", compiled.target], ["kernels", String(compiled.kernels)],
      ["registers", String(compiled.registers)], ["spilled bytes", String(compiled.spill_bytes)],
      ["bytes / element (forward, backward)", `${compiled.traffic_fwd} / ${compiled.traffic_bwd}`],
      ["reference shape", `${(compiled.shape || []).join("×")} ${compiled.dtype}`],
      ["compile time", `${Number(compiled.compile_s).toFixed(2)} s`],
      ["checked against eager", compiled.verified ? "yes" : "no"],
      ["kernel hash", compiled.kernel_hash]];
  fillRows(document.querySelector("#compiled tbody"), rows);
}

function drawLineage(lineage) {
  const items = lineage.map((step, i) => el("li", {},
    el("a", { href: candidateUrl(step.id), text: `#${step.id}` }),
    ` ${score(step.mean_score)} `, el("code", { text: step.formula || "(did not parse)" }),
    el("div", { class: "muted", text: lineage[i + 1]
      ? `from #${lineage[i + 1].id}: ${step.mutation || "(mutation not recorded)"}`
      : `initial population${step.mutation ? `: ${step.mutation}` : ""}` })));
  document.getElementById("lineage").replaceChildren(...items);
}

const PAGES = { searches: searchesPage, search: searchPage, candidate: candidatePage };
const page = PAGES[document.body.dataset.page];
if (page) page();
