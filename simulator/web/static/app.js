// bluegreen dashboard: plain JavaScript, no framework, no build step.
// Everything the page shows arrives on one server-sent event stream (/api/v1/dashboard/events):
// `state` (the Rollout, its Services, ReplicaSets, pods, analysis runs and the proxy's routes) when it
// changes, and `traffic` (the server-side traffic generator's aggregates) twice a second.
"use strict";

const COLORS = ["red", "orange", "yellow", "green", "blue", "purple"];
const REPO = "argoproj/rollouts-demo";
const STRIP = 100;
const ARROW_MS = 700;

let state = null; // the last `state` event
let traffic = null; // the last `traffic` event
let clockOffset = 0; // server epoch seconds - local epoch seconds
let token = sessionStorage.getItem("bluegreen-token") || "";
const arrowEnds = new Map(); // arrow key -> {x, y}: where each arrow pointed last, so a flip moves it
let animation = null;

const $ = (sel, root = document) => root.querySelector(sel);
const el = (tag, attrs = {}, ...children) => {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null) continue;
    if (k === "class") node.className = v;
    else if (k === "text") node.textContent = v;
    else node.setAttribute(k, v);
  }
  for (const child of children) if (child !== null && child !== undefined) node.append(child);
  return node;
};

// Colors on the page are the colors the pods answer (their image's tag), never a slot: a pool is named
// after its ReplicaSet and labelled with its revision and image.
function demoColor(image) {
  // argoproj/rollouts-demo:bad-green -> "green" (the color its pods answer)
  const tag = (image || "").split(":").pop() || "";
  const color = tag.replace(/^(bad|slow)-/, "");
  return COLORS.includes(color) ? color : "";
}

function shortImage(image) {
  return (image || "").replace(/^argoproj\//, "");
}

function servedPool(name) {
  // The proxy's view of a pool: {name, endpoints, labels: {revision, image}} or undefined.
  const pools = (state && state.proxy && state.proxy.pools) || [];
  return pools.find((p) => p.name === name);
}

function poolColor(name) {
  const pool = servedPool(name);
  return pool ? demoColor((pool.labels || {}).image) : "";
}

function poolShort(name) {
  // "rev 2" for a pool named after a ReplicaSet (its revision label), else the pool's own name.
  const pool = servedPool(name);
  const revision = pool && pool.labels ? pool.labels.revision : undefined;
  return revision ? `rev ${revision}` : name;
}

function seconds(s) {
  s = Math.max(0, Math.round(s));
  return s < 120 ? `${s}s` : `${Math.floor(s / 60)}m${s % 60 ? (s % 60) + "s" : ""}`;
}

// --- the API ------------------------------------------------------------------------------------

async function api(method, path, body) {
  const headers = { "Content-Type": "application/json" };
  if (token) headers.Authorization = `Bearer ${token}`;
  const response = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  let data = {};
  try {
    data = await response.json();
  } catch (_) {
    data = { error: `HTTP ${response.status}` };
  }
  if (response.status === 401) $("#token-row").hidden = false;
  if (!response.ok) throw new Error(data.error || `HTTP ${response.status}`);
  return data;
}

// --- the event stream ---------------------------------------------------------------------------

const handlers = {
  state(data) {
    state = data;
    clockOffset = data.now - Date.now() / 1000;
    renderState();
  },
  traffic(data) {
    traffic = data;
    renderTraffic();
  },
};

function setConnection(s, text) {
  const node = $("#connection");
  node.dataset.state = s;
  node.textContent = text;
}

let stream = null;

function openStream() {
  if (stream) stream.close();
  if (!token) {
    const source = new EventSource("/api/v1/dashboard/events");
    source.addEventListener("open", () => setConnection("open", "live"));
    source.addEventListener("error", () => {
      setConnection("error", "reconnecting…");
      // A token-protected admin API answers 401, which EventSource cannot show: ask once.
      fetch("/api/v1/traffic").then((r) => {
        if (r.status === 401) {
          source.close();
          $("#token-row").hidden = false;
          setConnection("error", "admin token needed");
        }
      }, () => {});
    });
    for (const [name, handle] of Object.entries(handlers)) {
      source.addEventListener(name, (e) => handle(JSON.parse(e.data)));
    }
    stream = source;
    return;
  }
  // With a bearer token (EventSource cannot send headers): the same stream read through fetch.
  const controller = new AbortController();
  stream = { close: () => controller.abort() };
  (async () => {
    const response = await fetch("/api/v1/dashboard/events", {
      headers: { Authorization: `Bearer ${token}` },
      signal: controller.signal,
    });
    if (!response.ok) {
      setConnection("error", response.status === 401 ? "wrong admin token" : `HTTP ${response.status}`);
      $("#token-row").hidden = false;
      return;
    }
    setConnection("open", "live");
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += value;
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        const block = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        let kind = "message";
        const lines = [];
        for (const line of block.split("\n")) {
          if (line.startsWith("event: ")) kind = line.slice(7);
          else if (line.startsWith("data: ")) lines.push(line.slice(6));
        }
        if (lines.length && handlers[kind]) handlers[kind](JSON.parse(lines.join("\n")));
      }
    }
    setConnection("error", "stream ended");
  })().catch((err) => {
    if (err.name !== "AbortError") setConnection("error", String(err.message || err));
  });
}

// --- the picture --------------------------------------------------------------------------------

function renderState() {
  const ro = state.rollout;
  const proxy = state.proxy || {};
  const routes = proxy.routes || {};
  const ports = state.listeners || {};
  $("#rollout-name").textContent = ro ? ro.name : "(no Rollout)";
  $("#phase").textContent = ro ? ro.phase : "–";
  $("#phase").dataset.phase = ro ? ro.phase : "";
  $("#revision").textContent = ro && ro.revision !== null ? ro.revision : "–";
  $("#image").textContent = ro ? shortImage(ro.image) : "–";

  const unavailable = proxy.unavailable || {};
  for (const role of ["active", "preview"]) {
    const pool = routes[role] || "";
    const served = servedPool(pool);
    const labels = (served && served.labels) || {};
    const listener = $(`#listener-${role}`);
    listener.dataset.pool = pool;
    listener.dataset.color = poolColor(pool);
    listener.dataset.unavailable = String(Boolean(unavailable[role]));
    $(`#route-${role}`).textContent = pool || "–";
    $(`#route-${role}-what`).textContent = labels.revision
      ? `revision ${labels.revision} · ${shortImage(labels.image)}`
      : pool ? "no revision" : "";
    $(`#port-${role}`).textContent = ports[role] ? `:${ports[role]}` : "";
    const why = $(`#why-${role}`);
    why.textContent = unavailable[role] || "";
    why.hidden = !unavailable[role];
  }
  $("#generation").textContent = routes.generation ?? "–";

  const services = ro ? ro.services : [];
  for (const role of ["active", "preview"]) {
    const node = $(`#svc-${role}`);
    const svc = services.find((s) => s.role === role);
    node.dataset.color = svc ? demoColor(svc.image) : "";
    node.dataset.revision = svc && svc.revision !== null ? svc.revision : "";
    $(".svc-name", node).textContent = svc ? svc.name : "(none)";
    const selector = $(".selector", node);
    selector.textContent = "";
    if (svc) {
      selector.append("selects ", el("code", { text: svc.podHash ? `hash ${svc.podHash}` : "app pods (no hash yet)" }));
      selector.append(` · ${svc.endpoints.length}/${svc.pods.length} ready`);
      if (svc.revision !== null) {
        selector.append(el("br"), el("strong", { text: `revision ${svc.revision}` }), ` · ${shortImage(svc.image)}`);
      }
    }
  }
  renderPods(ro);
  renderRollout(ro);
  renderEvents(state.events || []);
  renderTraffic();
  requestAnimationFrame(drawArrows);
}

function renderPods(ro) {
  const column = $("#col-pods");
  column.textContent = "";
  if (!ro) return;
  const shown = ro.replicaSets;
  if (!shown.length) column.append(el("p", { class: "muted", text: "no pods yet" }));
  for (const rs of shown) {
    if (rs.replicas === 0 && !rs.pods.length) {
      // An old color after its scale-down: kept as one line, like `ScaledDown` in `get`.
      column.append(
        el(
          "div",
          { class: "rs scaled-down", "data-rs": rs.name, "data-pool": rs.pool },
          el(
            "div",
            { class: "rs-head" },
            el("strong", { text: `revision ${rs.revision}` }),
            el("span", { class: "rs-name", text: rs.name }),
            el("span", { class: "swatch", "data-color": demoColor(rs.image) }),
            el("span", { text: shortImage(rs.image) }),
            el("span", { class: "tag", text: "scaled down" }),
          ),
        ),
      );
      continue;
    }
    const head = el(
      "div",
      { class: "rs-head" },
      el("strong", { text: `revision ${rs.revision}` }),
      el("span", { class: "rs-name", text: rs.name }),
      el("span", { text: `${rs.readyReplicas}/${rs.replicas} ready` }),
    );
    for (const tag of rs.tags) head.append(el("span", { class: `tag ${tag}`, text: tag }));
    if (rs.scaleDownAt) head.append(el("span", { class: "tag countdown", "data-deadline": rs.scaleDownAt }));
    const pods = el("div", { class: "pods" });
    for (const pod of rs.pods) {
      const status = pod.ready ? "Running" : pod.reason || pod.phase;
      const bad = /BackOff|Err|Failed|Terminating/.test(status);
      pods.append(
        el(
          "div",
          {
            class: "pod",
            id: `pod-${pod.name}`,
            "data-pod": pod.name,
            "data-color": demoColor(pod.image),
            "data-ready": String(pod.ready),
            title: `${pod.name}\n${pod.image}\n${pod.address}`,
          },
          el("div", { class: "pod-name", text: pod.name }),
          el("span", {
            class: `pod-status${bad ? " bad" : ""}`,
            text: `${status} · ready ${pod.ready ? 1 : 0}/1${pod.restarts ? ` · restarts ${pod.restarts}` : ""}`,
          }),
          el(
            "div",
            { class: "pod-image" },
            el("span", { class: "swatch", "data-color": demoColor(pod.image) }),
            el("span", { text: shortImage(pod.image) }),
          ),
          el("span", { class: "pod-rps", "data-rps-pod": pod.name }),
        ),
      );
    }
    column.append(
      el(
        "div",
        { class: `rs${rs.replicas === 0 ? " scaled-down" : ""}`, "data-rs": rs.name, "data-pool": rs.pool },
        head,
        pods,
      ),
    );
  }
  tickCountdowns();
}

function tickCountdowns() {
  const now = Date.now() / 1000 + clockOffset;
  for (const node of document.querySelectorAll("[data-deadline]")) {
    const left = Number(node.dataset.deadline) - now;
    node.textContent = left > 0 ? `scales down in ${seconds(left)}` : "scaling down";
  }
  const fact = $("#fact-scaledown");
  const ro = state && state.rollout;
  const pending = ro ? ro.replicaSets.filter((rs) => rs.scaleDownAt && rs.replicas > 0) : [];
  fact.textContent = pending.length
    ? pending
        .map((rs) => {
          const left = rs.scaleDownAt - now;
          return `revision ${rs.revision} (${shortImage(rs.image)}) ${left > 0 ? `in ${seconds(left)}` : "now"}`;
        })
        .join("; ")
    : ro
      ? `old revision kept ${ro.strategy.scaleDownDelaySeconds}s after a promotion`
      : "–";
}

function renderRollout(ro) {
  if (!ro) return;
  $("#fact-phase").textContent = ro.phase;
  $("#fact-message").textContent = ro.message || "–";
  $("#fact-pause").textContent = ro.pauseReasons.length
    ? `${ro.pauseReasons.join(", ")}: waiting for promote`
    : "not paused";
  const abort = $("#fact-abort");
  abort.textContent = ro.aborted ? ro.abortMessage || "aborted" : "no";
  abort.className = ro.aborted ? "bad" : "";
  const s = ro.strategy;
  $("#fact-strategy").textContent =
    `autoPromotionEnabled: ${s.autoPromotionEnabled} · scaleDownDelaySeconds: ${s.scaleDownDelaySeconds}` +
    (s.prePromotionAnalysis ? " · prePromotionAnalysis" : "") +
    (s.postPromotionAnalysis ? " · postPromotionAnalysis" : "");

  const box = $("#analysis");
  box.textContent = "";
  if (!ro.analysisRuns.length) box.append(el("p", { class: "muted", text: "none yet" }));
  for (const run of [...ro.analysisRuns].reverse()) {
    const node = el(
      "div",
      { class: "run", "data-run": run.name },
      el(
        "div",
        { class: "run-head" },
        el("span", { class: "run-phase", "data-phase": run.phase, text: run.phase }),
        el("span", { class: "run-name", text: run.name }),
        el("span", { class: "muted", text: `${run.type || "analysis"} · revision ${run.revision}` }),
      ),
    );
    if (run.message) node.append(el("div", { class: "muted", text: run.message }));
    for (const m of run.metrics) {
      const chips = el("div", { class: "measurements" });
      for (const x of m.measurements) {
        chips.append(
          el("span", {
            class: "m",
            "data-phase": x.phase,
            title: `${x.phase} ${x.finishedAt || ""} ${x.message || ""}`,
            text: x.value !== undefined ? x.value : x.phase,
          }),
        );
      }
      node.append(
        el(
          "div",
          {},
          el("strong", { text: m.name }),
          ` ${m.phase} · ✔ ${m.successful} ✖ ${m.failed} ⚠ ${m.error} · ${m.measurements.length} measured`,
          m.message ? ` · ${m.message}` : "",
          chips,
        ),
      );
    }
    box.append(node);
  }
}

function renderEvents(events) {
  const list = $("#events");
  list.textContent = "";
  for (const e of [...events].reverse()) {
    const time = new Date(e.time * 1000).toLocaleTimeString();
    list.append(
      el(
        "li",
        { class: e.type === "Warning" ? "warning" : "" },
        `${time} `,
        el("span", { class: "reason", text: e.reason }),
        ` ${e.message}`,
      ),
    );
  }
}

// --- arrows -------------------------------------------------------------------------------------

function anchor(node, side, box) {
  const r = node.getBoundingClientRect();
  return { x: (side === "right" ? r.right : r.left) - box.left, y: r.top + r.height / 2 - box.top };
}

function wanted() {
  const svg = $("#arrows");
  const box = svg.getBoundingClientRect();
  const arrows = [];
  const routes = (state && state.proxy && state.proxy.routes) || {};
  for (const role of ["active", "preview"]) {
    const user = role === "active" ? "#users-live" : "#users-preview";
    arrows.push({ key: `user-${role}`, from: anchor($(user), "right", box), to: anchor($(`#listener-${role}`), "left", box), cls: "user" });
    arrows.push({
      key: `lb-${role}`,
      from: anchor($(`#listener-${role}`), "right", box),
      to: anchor($(`#svc-${role}`), "left", box),
      cls: `c-${poolColor(routes[role]) || "none"}`,
    });
  }
  const ro = state && state.rollout;
  for (const svc of ro ? ro.services : []) {
    const from = anchor($(`#svc-${svc.role}`), "right", box);
    const shift = svc.role === "active" ? -7 : 7; // both Services on one pod: two arrows side by side
    svc.pods.forEach((name, i) => {
      const pod = document.getElementById(`pod-${name}`);
      if (!pod) return;
      const ready = svc.endpoints.includes(name);
      const to = anchor(pod, "left", box);
      arrows.push({
        key: `${svc.role}-${i}`,
        from,
        to: { x: to.x, y: to.y + shift },
        cls: `c-${demoColor(svc.image) || "none"}${ready ? "" : " not-ready"}`,
        service: svc.role,
        pod: name,
      });
    });
  }
  return arrows;
}

function pathFor(from, to) {
  const dx = Math.max(30, (to.x - from.x) / 2);
  return `M ${from.x} ${from.y} C ${from.x + dx} ${from.y}, ${to.x - dx} ${to.y}, ${to.x - 4} ${to.y}`;
}

function drawArrows() {
  if (!state) return;
  const svg = $("#arrows");
  const arrows = wanted();
  for (const old of svg.querySelectorAll("path.arrow")) old.remove();
  const paths = arrows.map((a) => {
    const path = document.createElementNS("http://www.w3.org/2000/svg", "path");
    path.setAttribute("class", `arrow ${a.cls}`);
    path.setAttribute("marker-end", "url(#head)");
    if (a.service) {
      path.dataset.service = a.service;
      path.classList.add(`svc-${a.service}`);
      path.dataset.pod = a.pod;
    }
    svg.append(path);
    return path;
  });
  // Arrows whose end moved (a flip, a new pod) glide from where they pointed to where they point now.
  const starts = arrows.map((a) => arrowEnds.get(a.key) || a.to);
  for (const a of arrows) arrowEnds.set(a.key, a.to);
  if (animation) cancelAnimationFrame(animation);
  document.body.dataset.arrows = "moving";
  const t0 = performance.now();
  const frame = (t) => {
    const k = Math.min(1, (t - t0) / ARROW_MS);
    const ease = k < 0.5 ? 2 * k * k : 1 - Math.pow(-2 * k + 2, 2) / 2;
    arrows.forEach((a, i) => {
      const s = starts[i];
      const to = { x: s.x + (a.to.x - s.x) * ease, y: s.y + (a.to.y - s.y) * ease };
      paths[i].setAttribute("d", pathFor(a.from, to));
    });
    animation = k < 1 ? requestAnimationFrame(frame) : null;
    if (!animation) document.body.dataset.arrows = "still";
  };
  animation = requestAnimationFrame(frame);
}

// --- traffic ------------------------------------------------------------------------------------

function renderTraffic() {
  if (!traffic) return;
  $("#traffic-toggle").checked = traffic.on;
  $("#traffic-rate").textContent = traffic.on
    ? `${traffic.rate} req/s per listener, GET /color, from the server`
    : "off: switch it on to send GET /color through both listeners";
  for (const role of ["active", "preview"]) {
    const t = traffic.listeners[role];
    const strip = $(`#strip-${role}`);
    const cells = t.strip.slice(-STRIP);
    while (strip.children.length < STRIP) strip.append(el("div", { class: "cell" }));
    const offset = STRIP - cells.length;
    for (let i = 0; i < STRIP; i++) {
      const cell = strip.children[i];
      const s = i >= offset ? cells[i - offset] : null;
      const failed = s && (s.status === 0 || s.status >= 500);
      cell.className = `cell${failed ? " err" : ""}`;
      cell.dataset.color = s && !failed ? s.color : ""; // what the pod answered, never the pool
      cell.dataset.pool = s ? s.pool : "";
      cell.title = s ? `${s.pod || "?"} (pool ${s.pool || "?"}): ${s.status ? `HTTP ${s.status}` : s.error} ${s.color}` : "";
    }
    strip.dataset.last = cells.length ? cells[cells.length - 1].color : "";
    const row = $(`#stats-${role}`);
    $(".rps", row).textContent = t.rps;
    $(".pools", row).textContent = Object.entries(t.byPool).map(([k, v]) => `${poolShort(k)} ${v}`).join(", ") || "–";
    $(".colors", row).textContent = "";
    for (const [color, v] of Object.entries(t.byColor)) {
      $(".colors", row).append(el("span", { class: "swatch", "data-color": color }), ` ${color} ${v}  `);
    }
    const errors = $(".errors", row);
    errors.textContent = `${(t.errorRate * 100).toFixed(1)} % · ${t.failed}/${t.requests} since start`;
    errors.className = `errors${t.errors ? " bad" : ""}`;
    const lat = t.latencyMs;
    $(".latency", row).textContent = lat.p50 === null ? "–" : `${lat.p50} / ${lat.max} ms`;
    $(`#rps-${role}`).textContent = traffic.on
      ? `${t.rps} req/s · errors ${(t.errorRate * 100).toFixed(1)} % (last ${traffic.window}s)`
      : "";
  }
  for (const node of document.querySelectorAll("[data-rps-pod]")) {
    const rps = traffic.pods[node.dataset.rpsPod];
    node.textContent = rps ? `${rps} req/s` : "";
  }
  const pools = Object.entries(traffic.pools).map(([k, v]) => `${poolShort(k)} ${v} req/s`).join(", ");
  $("#errors-window").textContent = `errors, last ${traffic.window}s`;
  // Since the start, per listener: the preview's 503s while new pods start are not live requests lost.
  const since = ["active", "preview"]
    .map((role) => `${role} ${traffic.listeners[role].failed}/${traffic.listeners[role].requests}`)
    .join(" · ");
  $("#traffic-totals").textContent = `last ${traffic.window}s: ${pools || "no requests"} · failed since the start: ${since}`;
}

// --- controls -----------------------------------------------------------------------------------

function fillImages() {
  const select = $("#image-select");
  for (const prefix of ["", "bad-", "slow-"]) {
    const group = el("optgroup", { label: prefix ? `${prefix}COLOR (${prefix === "bad-" ? "errors" : "latency"})` : "colors" });
    for (const color of COLORS) {
      group.append(el("option", { value: `${REPO}:${prefix}${color}`, text: `${prefix}${color}` }));
    }
    select.append(group);
  }
  select.value = `${REPO}:green`;
}

async function action(kind) {
  const ro = state && state.rollout;
  if (!ro) return;
  const name = ro.name;
  const out = $("#command");
  let path = `/api/v1/rollouts/${encodeURIComponent(name)}/${kind}`;
  let body = {};
  let command = `bluegreen rollouts ${kind} ${name}`;
  if (kind === "image") {
    const image = $("#image-select").value;
    body = { container: "*", image };
    command = `bluegreen rollouts set image ${name} '*=${image}'`;
  } else if (kind === "promote-full") {
    path = `/api/v1/rollouts/${encodeURIComponent(name)}/promote`;
    body = { full: true };
    command = `bluegreen rollouts promote ${name} --full`;
  } else if (kind === "promote") {
    body = { full: false };
  }
  out.className = "command";
  out.textContent = `$ ${command}`;
  try {
    const result = await api("POST", path, body);
    out.textContent = `$ ${command}\n${result.message || "ok"}`;
  } catch (err) {
    out.className = "command error";
    out.textContent = `$ ${command}\nError: ${err.message}`;
  }
}

async function toggleTraffic(on) {
  try {
    handlers.traffic(await api("POST", "/api/v1/traffic", { on }));
  } catch (err) {
    $("#command").className = "command error";
    $("#command").textContent = `traffic: ${err.message}`;
    $("#traffic-toggle").checked = !on;
  }
}

function init() {
  fillImages();
  for (const button of document.querySelectorAll("button[data-action]")) {
    button.addEventListener("click", () => action(button.dataset.action));
  }
  $("#traffic-toggle").addEventListener("change", (e) => toggleTraffic(e.target.checked));
  $("#btn-token").addEventListener("click", () => {
    token = $("#token").value.trim();
    sessionStorage.setItem("bluegreen-token", token);
    $("#token-row").hidden = true;
    openStream();
  });
  window.addEventListener("resize", () => {
    arrowEnds.clear();
    drawArrows();
  });
  setInterval(tickCountdowns, 1000); // the countdown only: redraws from the last state, asks the server nothing
  openStream();
}

init();
