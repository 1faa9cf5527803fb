// flowsh serve: keeps the dashboard and a run page live over Server-Sent Events.
// Everything else is plain HTML (the action buttons are forms and work without this file).
"use strict";

(function () {
  // The dashboard: when a run starts or ends anywhere, the server says so; the status
  // blocks are fetched again (drawn by the server) and swapped in. The start forms stay as
  // they are, with whatever is typed in them.
  const main = document.getElementById("dashboard");
  if (!main) return;
  let busy = false, again = false;
  async function refresh() {
    if (busy) { again = true; return; }
    busy = true;
    try {
      const resp = await fetch("/dashboard/cards");
      if (!resp.ok) return;
      const box = document.createElement("div");
      box.innerHTML = await resp.text();
      for (const fresh of box.querySelectorAll("div.wf-live")) {
        const name = fresh.dataset.workflow;
        let section = main.querySelector('section.wf[data-workflow="' + CSS.escape(name) + '"]');
        if (!section) {
          // A workflow seen for the first time (run from the CLI): shown, not startable.
          section = document.createElement("section");
          section.className = "wf";
          section.id = "wf-" + name;
          section.dataset.workflow = name;
          section.append(document.createElement("div"));
          const before = main.querySelector("section.errors");
          main.insertBefore(section, before);
        }
        const old = section.querySelector("div.wf-live") || section.firstElementChild;
        old.replaceWith(fresh);
        for (const c of Array.from(section.classList)) {
          if (c.startsWith("st-")) section.classList.remove(c);
        }
        section.classList.add("st-" + fresh.dataset.status);
      }
    } finally {
      busy = false;
      if (again) { again = false; refresh(); }
    }
  }
  // The first event too: a run may have started between the page and the stream.
  const events = new EventSource("/api/v1/workflows/events");
  events.addEventListener("workflows", refresh);
})();

(function () {
  const header = document.getElementById("run");
  if (!header) return;
  const runId = header.dataset.run;
  const base = "/api/v1/runs/" + encodeURIComponent(runId);
  const RESUMABLE = ["failed", "interrupted", "crashed"];
  const logs = new Map(); // step name -> {source, done}

  function setStatusClass(el, prefix, status) {
    for (const c of Array.from(el.classList)) {
      if (c.startsWith(prefix)) el.classList.remove(c);
    }
    el.classList.add(prefix + status);
  }

  function fmt(seconds) {
    if (seconds === null || seconds === undefined) return "-";
    if (seconds < 1) return Math.round(seconds * 1000) + "ms";
    if (seconds < 60) return seconds.toFixed(1) + "s";
    const m = Math.floor(seconds / 60), s = Math.round(seconds % 60);
    return m < 60 ? m + "m" + String(s).padStart(2, "0") + "s"
      : Math.floor(m / 60) + "h" + String(m % 60).padStart(2, "0") + "m";
  }

  function show(selector, visible) {
    document.querySelectorAll(selector).forEach((f) => { f.hidden = !visible; });
  }

  let graphBusy = false, graphAgain = false;
  async function refreshGraph() {
    // The DAG and the timeline are drawn by the server (the report's templates).
    if (graphBusy) { graphAgain = true; return; }
    graphBusy = true;
    try {
      const resp = await fetch("/runs/" + encodeURIComponent(runId) + "/graph");
      if (resp.ok) {
        const old = document.getElementById("graph");
        const box = document.createElement("div");
        box.innerHTML = await resp.text();
        const fresh = box.querySelector("#graph");
        if (old && fresh) old.replaceWith(fresh);
      }
    } finally {
      graphBusy = false;
      if (graphAgain) { graphAgain = false; refreshGraph(); }
    }
  }

  function onRun(snap) {
    header.dataset.status = snap.status;
    setStatusClass(header, "status-", snap.status);
    const pill = document.getElementById("run-status");
    pill.textContent = snap.status;
    setStatusClass(pill, "pill-", snap.status);
    document.getElementById("run-took").textContent = fmt(snap.duration);
    document.getElementById("run-exit").textContent =
      snap.exit_code === null ? "-" : String(snap.exit_code);
    show(".act-resume", RESUMABLE.includes(snap.status) && !!snap.file);
    show(".act-interrupt", snap.status === "running");
    show(".act-retry", snap.status !== "running" && !!snap.file);
    for (const [name, st] of Object.entries(snap.steps)) {
      const det = document.querySelector('details.log[data-step="' + CSS.escape(name) + '"]');
      if (!det) continue;
      const was = det.dataset.status;
      det.dataset.status = st.status;
      setStatusClass(det, "st-", st.status);
      const dot = det.querySelector("summary .dot");
      if (dot) setStatusClass(dot, "st-", st.status);
      const meta = det.querySelector(".step-meta");
      let text = st.status;
      if (st.exit_code !== null) text += " · exit " + st.exit_code;
      if (st.attempts > 1) text += " · " + st.attempts + " attempts";
      if (meta) meta.textContent = text;
      // A `call:` step's child run exists once the step starts: link to it. A retry of
      // the step (`flowsh retry --step`) runs it again in this run with a new child run:
      // the link follows it.
      let child = det.querySelector("summary .child-run");
      if (st.child_run && !child) {
        child = document.createElement("a");
        child.className = "child-run";
        child.append("child run ", document.createElement("code"));
        det.querySelector("summary").append(child);
      }
      if (st.child_run) {
        child.href = "/runs/" + encodeURIComponent(st.child_run);
        child.querySelector("code").textContent = st.child_run;
      } else if (child) {
        child.remove();
      }
      const log = logs.get(name);
      const attemptsWas = det.dataset.attempts;
      det.dataset.attempts = String(st.attempts);
      // Run again (resume, retry, a retry attempt): the runner appends the new attempt to
      // the log; follow it on from where the finished stream stopped. A quick step may go
      // from failed to succeeded between two updates, so a new attempt count says it too.
      const again = (attemptsWas !== undefined && attemptsWas !== String(st.attempts)) ||
        (was !== st.status && (st.status === "running" || st.status === "retrying"));
      if (det.open && log && log.done && again) {
        followLog(det);
      }
    }
    refreshGraph();
  }

  function followLog(det) {
    // Once per step, and again after its stream ended (a new attempt appends to the log):
    // from the byte offset where the last stream stopped.
    const name = det.dataset.step;
    const pre = det.querySelector("pre.logtext");
    const old = logs.get(name);
    if (old && !old.done) return;
    const offset = old ? old.offset : 0;
    const state = { source: null, done: false, offset: offset };
    logs.set(name, state);
    const source = new EventSource(det.dataset.log + "?offset=" + offset);
    state.source = source;
    source.addEventListener("log", (ev) => {
      const msg = JSON.parse(ev.data);
      pre.append(document.createTextNode(msg.text));
      state.offset = msg.offset;
      pre.scrollTop = pre.scrollHeight;
    });
    source.addEventListener("skip", (ev) => {
      // A huge log: the stream starts at its last MiB.
      const msg = JSON.parse(ev.data);
      pre.append(document.createTextNode("[" + msg.skipped + " bytes before this are not " +
        "shown: see the whole log with `flowsh logs`]\n"));
      state.offset = msg.offset;
    });
    source.addEventListener("end", () => {
      state.done = true;
      source.close();
      det.classList.add("log-complete");
    });
  }

  document.querySelectorAll("details.log").forEach((det) => {
    det.addEventListener("toggle", () => { if (det.open) followLog(det); });
    if (det.open) followLog(det);
  });
  // A failed step's log is what a failed night is about: open the first one.
  const failed = document.querySelector('details.log[data-status="failed"]');
  if (failed && !location.hash) failed.open = true;

  // The action buttons post to the API and stay on the page, which follows the run live;
  // without script they are plain forms that come back to this page.
  const csrf = document.querySelector('meta[name="csrf-token"]').content;
  const errorLine = document.getElementById("action-error");
  document.querySelectorAll("form.act[data-api]").forEach((form) => {
    form.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      const fields = new FormData(form);
      const body = {};
      if (fields.has("step")) {
        body.step = fields.get("step");
        body.downstream = fields.get("downstream") === "on";
      }
      errorLine.hidden = true;
      const resp = await fetch(form.dataset.api, {
        method: "POST", body: JSON.stringify(body),
        headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf },
      });
      if (!resp.ok) {
        let message = resp.status + " " + resp.statusText;
        try { message = (await resp.json()).error; } catch (e) { /* not JSON */ }
        errorLine.textContent = message;
        errorLine.hidden = false;
      }
    });
  });

  const events = new EventSource(base + "/events");
  events.addEventListener("run", (ev) => onRun(JSON.parse(ev.data)));
})();
