// The flows page: polls /api/flows for records the agents wrote, shows them newest first with
// filters, draws who talks to whom, and explains a clicked flow through /api/explain.
"use strict";

const MAX_FLOWS = 5000;
const state = { after: 0, flows: [], selected: null, clickedFirstDenied: false };
const parameters = new URLSearchParams(location.search);

function text(value) {
  return value === undefined || value === null ? "" : String(value);
}

// A side of a flow as a person reads it: namespace/name for pods and network sets, otherwise
// the name the record gives (a domain or an address).
function side(record, prefix) {
  if (record[prefix + "_type"] === "net" && record[prefix + "_ip"]) return record[prefix + "_ip"];
  const namespace = record[prefix + "_namespace"];
  const name = record[prefix + "_name"] || record[prefix + "_name_aggr"] || "";
  if (namespace && namespace !== "-") return namespace + "/" + name;
  return name || "-";
}

function group(record, prefix) {
  const kind = record[prefix + "_type"];
  const namespace = record[prefix + "_namespace"];
  if ((kind === "wep" || kind === "ns") && namespace && namespace !== "-") return "ns:" + namespace;
  return (kind || "net") + ":" + side(record, prefix);
}

function policiesText(list) {
  if (!Array.isArray(list)) return "";
  return list.join(", ");
}

function firstAction(list) {
  if (!Array.isArray(list) || list.length === 0) return "";
  const parts = String(list[list.length - 1]).split("|");
  return parts[parts.length - 1];
}

function matches(record) {
  const namespace = document.getElementById("filter-namespace").value;
  const action = document.getElementById("filter-action").value;
  const policy = document.getElementById("filter-policy").value.trim().toLowerCase();
  if (namespace && record.source_namespace !== namespace && record.dest_namespace !== namespace) return false;
  if (action && record.action !== action) return false;
  if (policy && !policiesText(record.policies).toLowerCase().includes(policy)) return false;
  return true;
}

function render() {
  const body = document.querySelector("#flows tbody");
  const shown = state.flows.filter(matches).slice(-500).reverse();
  const rows = shown.map((record) => {
    const row = document.createElement("tr");
    row.className = record.action === "deny" ? "deny" : "allow";
    if (record === state.selected) row.classList.add("selected");
    const staged = firstAction(record.pending_policies);
    const cells = [
      new Date(Number(record.end_time) * 1000).toLocaleTimeString(),
      side(record, "source"),
      side(record, "dest"),
      text(record.proto) + "/" + text(record.dest_port),
      text(record.reporter),
      text(record.action),
      policiesText(record.policies),
      policiesText(record.pending_policies),
      text(record.num_flows_started !== undefined ? record.num_flows_started : record.num_flows),
      text(record.bytes_out) + "/" + text(record.bytes_in),
    ];
    cells.forEach((value, index) => {
      const cell = document.createElement("td");
      cell.textContent = value;
      if (index === 5) cell.className = "action";
      if (index === 7 && staged === "deny") cell.className = "staged-deny";
      row.appendChild(cell);
    });
    row.addEventListener("click", () => explainFlow(record));
    row.dataset.action = text(record.action);
    return row;
  });
  body.replaceChildren(...rows);
  const denied = state.flows.filter((record) => record.action === "deny").length;
  document.getElementById("counts").textContent =
    state.flows.length + " records, " + denied + " denied, " + shown.length + " shown";
  drawGraph();
  if (parameters.get("select") === "first-denied" && !state.clickedFirstDenied) {
    const first = body.querySelector("tr.deny");
    if (first) {
      state.clickedFirstDenied = true;
      first.click();
    }
  }
}

function updateNamespaces() {
  const select = document.getElementById("filter-namespace");
  const known = new Set(Array.from(select.options).map((option) => option.value));
  const namespaces = new Set();
  for (const record of state.flows) {
    for (const namespace of [record.source_namespace, record.dest_namespace]) {
      if (namespace && namespace !== "-") namespaces.add(namespace);
    }
  }
  for (const namespace of Array.from(namespaces).sort()) {
    if (!known.has(namespace)) {
      const option = document.createElement("option");
      option.value = namespace;
      option.textContent = namespace;
      select.appendChild(option);
    }
  }
}

function drawGraph() {
  const svg = document.getElementById("graph");
  const edges = new Map();
  for (const record of state.flows.filter(matches)) {
    const from = group(record, "source");
    const to = group(record, "dest");
    const key = from + "\u0000" + to;
    const edge = edges.get(key) || { from, to, allow: 0, deny: 0 };
    edge[record.action === "deny" ? "deny" : "allow"] += 1;
    edges.set(key, edge);
  }
  const nodes = Array.from(new Set(Array.from(edges.values()).flatMap((edge) => [edge.from, edge.to]))).sort();
  const center = 210, radius = 150;
  const position = new Map(nodes.map((node, index) => {
    const angle = (2 * Math.PI * index) / Math.max(nodes.length, 1) - Math.PI / 2;
    return [node, [center + radius * Math.cos(angle), center + radius * Math.sin(angle)]];
  }));
  const namespace = "http://www.w3.org/2000/svg";
  const parts = [];
  for (const edge of edges.values()) {
    const [x1, y1] = position.get(edge.from);
    const [x2, y2] = position.get(edge.to);
    const line = document.createElementNS(namespace, "line");
    line.setAttribute("x1", x1); line.setAttribute("y1", y1);
    line.setAttribute("x2", x2); line.setAttribute("y2", y2);
    line.setAttribute("stroke", edge.deny > 0 ? "var(--deny)" : "var(--allow)");
    line.setAttribute("stroke-width", 2);
    line.setAttribute("class", "edge " + (edge.deny > 0 ? "deny" : "allow"));
    const title = document.createElementNS(namespace, "title");
    title.textContent = edge.from + " → " + edge.to + ": " + edge.allow + " allowed, " + edge.deny + " denied";
    line.appendChild(title);
    parts.push(line);
  }
  for (const node of nodes) {
    const [x, y] = position.get(node);
    const dot = document.createElementNS(namespace, "circle");
    dot.setAttribute("cx", x); dot.setAttribute("cy", y); dot.setAttribute("r", 6);
    dot.setAttribute("fill", node.startsWith("ns:") ? "#3367d6" : "#777");
    const label = document.createElementNS(namespace, "text");
    label.setAttribute("x", x + 8); label.setAttribute("y", y + 3);
    label.textContent = node.replace(/^ns:/, "");
    parts.push(dot, label);
  }
  svg.replaceChildren(...parts);
}

async function explainFlow(record) {
  state.selected = record;
  const panel = document.getElementById("trace");
  const body = document.getElementById("trace-body");
  panel.hidden = false;
  const query = new URLSearchParams({
    from: side(record, "source"),
    to: side(record, "dest"),
    protocol: text(record.proto).toUpperCase() || "TCP",
  });
  if (record.dest_port) query.set("port", record.dest_port);
  document.getElementById("trace-flow").textContent =
    query.get("from") + " → " + query.get("to") + " " + query.get("protocol") + (record.dest_port ? " port " + record.dest_port : "");
  body.textContent = "explaining…";
  try {
    const response = await fetch("/api/explain?" + query.toString());
    const answer = await response.json();
    const pre = document.createElement("pre");
    pre.className = "explain-text";
    pre.textContent = answer.text || answer.error || "";
    const verdict = document.createElement("p");
    verdict.className = "verdict verdict-" + (answer.verdict === "allow" ? "allow" : "deny");
    verdict.textContent = answer.verdict ? "Enforced: " + answer.verdict : "";
    body.replaceChildren(verdict, pre);
  } catch (error) {
    body.textContent = "cannot explain: " + error;
  }
  render();
}

async function poll() {
  try {
    const response = await fetch("/api/flows?after=" + state.after);
    const answer = await response.json();
    if (answer.flows.length > 0) {
      state.flows.push(...answer.flows);
      if (state.flows.length > MAX_FLOWS) state.flows.splice(0, state.flows.length - MAX_FLOWS);
      updateNamespaces();
    }
    state.after = answer.last;
    document.getElementById("status").textContent =
      answer.agents + " agent" + (answer.agents === 1 ? "" : "s") + ", updated " + new Date().toLocaleTimeString();
    render();
  } catch (error) {
    document.getElementById("status").textContent = "disconnected: " + error;
  }
  setTimeout(poll, 1000);
}

for (const id of ["filter-namespace", "filter-action", "filter-policy"]) {
  document.getElementById(id).addEventListener("input", render);
}
document.getElementById("trace-close").addEventListener("click", () => {
  document.getElementById("trace").hidden = true;
  state.selected = null;
  render();
});
poll();
