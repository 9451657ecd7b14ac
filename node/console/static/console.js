// strom console: the few live parts of the pages. Plain JavaScript, no build, no dependencies.
// Every value from the server is put into the page as text (textContent), never as HTML.
"use strict";

function formatNumber(value, unit) {
  if (value === undefined || value === null) return "—";
  if (unit === "bytes") {
    const units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let i = 0;
    while (Math.abs(value) >= 1024 && i < units.length - 1) { value /= 1024; i++; }
    return (i === 0 ? value.toFixed(0) : value.toFixed(1)) + " " + units[i];
  }
  return value >= 100 ? value.toFixed(0) : value.toFixed(1);
}

async function getJSON(url) {
  const response = await fetch(url, {credentials: "same-origin", headers: {"Accept": "application/json"}});
  if (!response.ok) throw new Error(url + ": HTTP " + response.status);
  return response.json();
}

function every(ms, fn) {
  fn();
  return setInterval(fn, ms);
}

// ---- overview and topics: live rates from the admin listeners ----
function startRates() {
  const holder = document.querySelector("[data-live-url]");
  if (!holder) return;
  const rated = document.querySelectorAll("[data-rate]");
  const topicCells = document.querySelectorAll("[data-topic-rate]");
  if (!rated.length && !topicCells.length) return;
  const problems = document.querySelector("[data-rate-problems]");
  every(2000, async () => {
    try {
      const live = await getJSON(holder.dataset.liveUrl);
      if (!live.configured) return;
      rated.forEach((el) => {
        el.textContent = formatNumber(live[el.dataset.rate], el.dataset.unit);
      });
      topicCells.forEach((el) => {
        el.textContent = formatNumber(live.topics[el.dataset.topicRate] || 0);
      });
      if (problems) problems.textContent = live.problems.length ? "Unreachable: " + live.problems.join("; ") : "";
    } catch (err) {
      if (problems) problems.textContent = String(err);
    }
  });
}

// ---- consumer group: lag over time ----
function startLag() {
  const chart = document.getElementById("lag-chart");
  if (!chart) return;
  setInterval(async () => {
    try {
      const lag = await getJSON(chart.dataset.lagUrl);
      document.getElementById("lag-line").setAttribute("points", lag.points);
      document.getElementById("total-lag").textContent = lag.total_lag;
      document.getElementById("lag-max").textContent = lag.max_lag;
      document.getElementById("group-state").textContent = lag.state;
      lag.partitions.forEach((p) => {
        const row = document.querySelector('#offsets tr[data-tp="' + CSS.escape(p.topic + ":" + p.partition) + '"]');
        if (!row) return;
        row.querySelector(".committed").textContent = p.committed >= 0 ? p.committed : "—";
        row.querySelector(".end").textContent = p.end;
        row.querySelector(".lag").textContent = p.lag === null ? "—" : p.lag;
      });
    } catch (err) {
      /* the next poll tries again */
    }
  }, 3000);
}

// ---- messages: live tail over server-sent events ----
function renderedCell(part, cls) {
  const cell = document.createElement("td");
  const pre = document.createElement("pre");
  pre.className = "rendered kind-" + part.kind + " " + cls;
  pre.textContent = part.text;
  cell.appendChild(pre);
  for (const note of [part.truncated ? "truncated: " + part.size + " bytes in all" : "", part.note]) {
    if (!note) continue;
    const span = document.createElement("span");
    span.className = "note";
    span.textContent = note;
    cell.appendChild(span);
  }
  return cell;
}

function tailRow(record) {
  const row = document.createElement("tr");
  row.dataset.partition = record.partition;
  row.dataset.offset = record.offset;
  for (const text of [record.partition, record.offset, record.time]) {
    const cell = document.createElement("td");
    cell.textContent = text;
    row.appendChild(cell);
  }
  row.appendChild(renderedCell(record.key, "key"));
  row.appendChild(renderedCell(record.value, "value"));
  const headers = document.createElement("td");
  for (const [name, value] of record.headers) {
    const line = document.createElement("div");
    line.textContent = name + ": " + value.text;
    headers.appendChild(line);
  }
  row.appendChild(headers);
  return row;
}

const TAIL_ROWS_MAX = 500;

function startTail() {
  const box = document.getElementById("tail");
  if (!box) return;
  const start = document.getElementById("tail-start");
  const stop = document.getElementById("tail-stop");
  const status = document.getElementById("tail-status");
  const body = box.querySelector("tbody");
  let source = null;
  start.addEventListener("click", () => {
    if (source) return;
    status.textContent = "connecting…";
    source = new EventSource(box.dataset.tailUrl);
    start.hidden = true;
    stop.hidden = false;
    source.addEventListener("ready", (event) => {
      const positions = JSON.parse(event.data).positions;
      status.textContent = "following from " + Object.entries(positions).map(([p, o]) => "partition " + p + " offset " + o).join(", ");
      status.dataset.state = "following";
    });
    source.addEventListener("records", (event) => {
      for (const record of JSON.parse(event.data)) {
        body.insertBefore(tailRow(record), body.firstChild);
      }
      while (body.rows.length > TAIL_ROWS_MAX) body.deleteRow(body.rows.length - 1);
    });
    source.addEventListener("failed", (event) => {
      status.textContent = "stopped: " + JSON.parse(event.data).error;
      status.dataset.state = "failed";
      source.close();
      source = null;
      start.hidden = false;
      stop.hidden = true;
    });
    source.onerror = () => {
      if (source && source.readyState === EventSource.CONNECTING) status.textContent = "reconnecting…";
    };
  });
  stop.addEventListener("click", () => {
    if (source) source.close();
    source = null;
    status.textContent = "not following";
    status.dataset.state = "stopped";
    start.hidden = false;
    stop.hidden = true;
  });
}

document.addEventListener("DOMContentLoaded", () => {
  startRates();
  startLag();
  startTail();
});
