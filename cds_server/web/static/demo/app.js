// The CarePath CDS test bench: a tiny EHR that calls the service like a real client would.
// Plain JavaScript, no build step, no CDN. Card text is rendered from markdown after
// escaping every character of HTML, so nothing in a card can inject markup or script.
"use strict";

const CPT = "http://www.ama-assn.org/go/cpt";
const ICD = "http://hl7.org/fhir/sid/icd-10-cm";
const POS = "https://www.cms.gov/Medicare/Coding/place-of-service-codes/Place_of_Service_Code_Set";
const EXT = "http://hl7.org/fhir/us/davinci-crd/StructureDefinition/ext-coverage-information";
const SIGN = "/cds-services/crd-order-sign";
const TYPE_KEYS = {Condition: "conditions", Procedure: "procedures", Observation: "observations",
  MedicationRequest: "medicationRequests", MedicationStatement: "medicationStatements",
  MedicationDispense: "medicationDispenses", AllergyIntolerance: "allergies", Device: "devices",
  DiagnosticReport: "diagnosticReports", ImagingStudy: "imagingStudies", Encounter: "encounters",
  QuestionnaireResponse: "questionnaireResponses", Coverage: "coverage"};

const state = {config: null, request: null, lastCoverage: {}};
const $ = (id) => document.getElementById(id);

function escapeHtml(text) {
  return String(text).replace(/[&<>"']/g, (c) => ({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;"}[c]));
}

// Markdown subset used by the service's cards: paragraphs, "- " lists (nested by two spaces),
// **bold**, _italic_, [links](https://…) and backslash escapes. The input is escaped first, so no
// HTML survives; only http(s) link targets become links.
function renderMarkdown(markdown) {
  const inline = (line) => escapeHtml(line)
    .replace(/\\([\\`*_\[\]|])/g, (m, c) => `&#${c.charCodeAt(0)};`)
    .replace(/\[([^\]]+)\]\((https?:\/\/[^\s)]+)\)/g, '<a href="$2" target="_blank" rel="noopener">$1</a>')
    .replace(/\*\*(.+?)\*\*/g, "<strong>$1</strong>")
    .replace(/(^|\W)_(.+?)_(?=\W|$)/g, "$1<em>$2</em>");
  let html = "";
  let depth = 0;
  for (const raw of String(markdown).split("\n")) {
    const item = raw.match(/^(\s*)- (.*)$/);
    const level = item ? Math.floor(item[1].length / 2) + 1 : 0;
    while (depth < level) { html += "<ul>"; depth += 1; }
    while (depth > level) { html += "</ul>"; depth -= 1; }
    if (item) html += `<li>${inline(item[2])}</li>`;
    else if (raw.trim()) html += `<p>${inline(raw)}</p>`;
  }
  while (depth > 0) { html += "</ul>"; depth -= 1; }
  return html;
}

function status(text) { $("status").textContent = text; }

async function getJson(url, options = {}) {
  const response = await fetch(url, options);
  const body = await response.json().catch(() => ({}));
  return {status: response.status, body};
}

async function authHeaders(path) {
  const headers = {"Content-Type": "application/json"};
  if (state.config && state.config.authRequired) {
    const minted = await getJson("/demo/token", {method: "POST", headers, body: JSON.stringify({path})});
    headers.Authorization = `Bearer ${minted.body.token}`;
  }
  return headers;
}

async function call(path, body) {
  return getJson(path, {method: "POST", headers: await authHeaders(path), body: JSON.stringify(body)});
}

function firstOrder() { return state.request.context.draftOrders.entry[0].resource; }

function fillEditor() {
  const order = firstOrder();
  const code = ((order.code || {}).coding || [])[0] || {};
  const reason = (((order.reasonCode || [])[0] || {}).coding || [])[0] || {};
  const site = ((((order.locationCode || [])[0] || {}).coding || [])[0] || {}).code || "";
  $("order-code").value = code.code || "";
  $("order-dx").value = reason.code || "";
  $("order-site").value = site;
  $("order-qty").value = (order.quantityQuantity || {}).value || "";
  const list = state.request.context.draftOrders.entry.map((e) => {
    const r = e.resource;
    const c = ((r.code || {}).coding || [])[0] || {};
    return `${r.resourceType}/${r.id}: ${c.code || "?"} ${(r.code || {}).text || c.display || ""}`;
  });
  $("orders").textContent = `Draft orders: ${list.join(" · ")}`;
}

function applyEditor() {
  const order = firstOrder();
  const code = $("order-code").value.trim();
  if (code) order.code = {coding: [{system: CPT, code}], text: (order.code || {}).text || code};
  const dx = $("order-dx").value.trim();
  if (dx) order.reasonCode = [{coding: [{system: ICD, code: dx}]}];
  const site = $("order-site").value;
  if (site) order.locationCode = [{coding: [{system: POS, code: site}]}]; else delete order.locationCode;
  const qty = parseInt($("order-qty").value, 10);
  if (qty > 0) order.quantityQuantity = {value: qty}; else delete order.quantityQuantity;
}

async function loadScenarios() {
  const listed = (await getJson("/demo/scenarios")).body;
  const select = $("scenario");
  for (const s of listed) {
    const option = document.createElement("option");
    option.value = s.name;
    option.textContent = `${s.name} — ${s.service || "routing"}: ${s.outcome}`;
    option.dataset.description = s.description;
    select.appendChild(option);
  }
  select.addEventListener("change", () => loadScenario(select.value));
  const preferred = listed.find((s) => s.name === "mri/conservative-care-exactly-42-days") || listed[0];
  select.value = preferred.name;
  await loadScenario(preferred.name);
}

async function loadScenario(name) {
  state.request = (await getJson(`/demo/scenarios/${name}`)).body;
  const option = [...$("scenario").options].find((o) => o.value === name);
  $("scenario-description").textContent = option ? option.dataset.description : "";
  clearAnswer();
  fillEditor();
  status(`Loaded ${name}`);
}

function usePastedBundle() {
  let bundle;
  try { bundle = JSON.parse($("bundle").value); } catch (e) { $("bundle-status").textContent = "Not JSON"; return; }
  const resources = (bundle.entry || []).map((e) => e.resource).filter(Boolean);
  const patient = resources.find((r) => r.resourceType === "Patient");
  const prefetch = {patient: patient || null};
  for (const key of Object.values(TYPE_KEYS)) prefetch[key] = {resourceType: "Bundle", type: "searchset", entry: []};
  for (const r of resources) {
    const key = TYPE_KEYS[r.resourceType];
    if (key) prefetch[key].entry.push({resource: r});
  }
  if (!prefetch.coverage.entry.length) prefetch.coverage.entry = state.request.prefetch.coverage.entry;
  if (patient) state.request.context.patientId = patient.id;
  state.request.prefetch = prefetch;
  $("bundle-status").textContent = `Using ${resources.length} resources`;
}

function clearAnswer() {
  for (const id of ["coverage", "cards", "questionnaire", "decision-link"]) $(id).innerHTML = "";
  state.lastCoverage = {};
}

function coverageOf(resource) {
  const ext = (resource.extension || []).filter((e) => e.url === EXT).pop();
  if (!ext) return null;
  const out = {};
  for (const part of ext.extension) {
    const key = Object.keys(part).find((k) => k.startsWith("value"));
    out[part.url] = out[part.url] ? [].concat(out[part.url], part[key]) : part[key];
  }
  return out;
}

function plainWords(info) {
  if (info.covered === "not-covered") return ["denied", `Not covered: ${(info.reason || {}).text || ""}`];
  if (info.covered === "indeterminate") return ["needs", `Coverage could not be determined: ${(info.reason || {}).text || ""}`];
  if (info["pa-needed"] === "satisfied") return ["satisfied", `Covered. Prior authorization satisfied: authorization number ${info["satisfied-pa-id"]}, valid until ${info["expiry-date"]}.`];
  if (info["pa-needed"] === "no-auth") return ["satisfied", "Covered. No prior authorization needed."];
  if (info["doc-needed"]) return ["needs", `Covered, prior authorization needed: documentation needed. ${(info.reason || {}).text || ""}`];
  return ["denied", `Covered, prior authorization needed (review). ${(info.reason || {}).text || ""}`];
}

// The service's own link from the cards (signed when authentication is on), else the plain page.
function decisionHref(response, assertionId) {
  const plain = `/determinations/${encodeURIComponent(assertionId)}`;
  for (const card of response.cards || []) {
    for (const link of card.links || []) {
      try {
        const url = new URL(link.url, window.location.href);
        if (url.pathname === plain) return url.pathname + url.search;
      } catch (e) { /* not a URL: skip */ }
    }
  }
  return plain;
}

function renderCoverage(response) {
  const box = $("coverage");
  box.innerHTML = "";
  const actions = response.systemActions || [];
  if (!actions.length) {
    box.innerHTML = `<div class="coverage">No new coverage information: nothing changed since the last answer.</div>`;
    return;
  }
  for (const action of actions) {
    const info = coverageOf(action.resource);
    if (!info) continue;
    const entry = state.request.context.draftOrders.entry.find((e) =>
      e.resource.resourceType === action.resource.resourceType && e.resource.id === action.resource.id);
    if (entry) entry.resource = action.resource;  // keep the annotated order, as an EHR does
    state.lastCoverage[`${action.resource.resourceType}/${action.resource.id}`] = info;
    const [kind, words] = plainWords(info);
    const div = document.createElement("div");
    div.className = `coverage ${kind}`;
    div.dataset.testid = "coverage";
    div.innerHTML = `<strong>${escapeHtml(action.resource.resourceType)}/${escapeHtml(action.resource.id)}</strong>: ${escapeHtml(words)}`;
    if (info.questionnaire) {
      const open = document.createElement("button");
      open.textContent = "Open the documentation questionnaire";
      open.id = "open-questionnaire";
      open.addEventListener("click", () => openQuestionnaire(action.resource));
      const step = document.createElement("button");  // the adaptive form (adaptive.js, $next-question)
      step.textContent = "Answer step by step";
      step.id = "open-adaptive";
      step.addEventListener("click", () => openAdaptive(action.resource, info.questionnaire));
      div.appendChild(document.createElement("br"));
      div.appendChild(open);
      div.appendChild(step);
    }
    box.appendChild(div);
    $("decision-link").innerHTML = `<a id="decision" href="${decisionHref(response, info["coverage-assertion-id"])}" target="_blank" rel="noopener">See this decision, criterion by criterion</a>`;
  }
}

function renderCards(response) {
  const box = $("cards");
  box.innerHTML = "";
  for (const card of response.cards || []) {
    const div = document.createElement("div");
    div.className = `card ${["info", "warning", "critical"].includes(card.indicator) ? card.indicator : "info"}`;
    div.innerHTML = `<span class="source">${escapeHtml(card.source.label)}</span><div class="summary">${escapeHtml(card.summary)}</div>`;
    if (card.detail) {
      const detail = document.createElement("div");
      detail.className = "detail";
      detail.innerHTML = renderMarkdown(card.detail);
      div.appendChild(detail);
    }
    for (const link of card.links || []) {
      if (!/^https?:\/\//.test(link.url)) continue;
      const a = document.createElement("a");
      a.href = link.url; a.textContent = link.label; a.target = "_blank"; a.rel = "noopener";
      div.appendChild(a); div.appendChild(document.createTextNode(" "));
    }
    for (const suggestion of card.suggestions || []) {
      const button = document.createElement("button");
      button.textContent = suggestion.label;
      button.className = "suggestion";
      button.addEventListener("click", () => acceptSuggestion(card, suggestion));
      div.appendChild(button);
    }
    if ((card.overrideReasons || []).length) {
      const select = document.createElement("select");
      select.className = "override-reason";
      for (const reason of card.overrideReasons) {
        const option = document.createElement("option");
        option.value = JSON.stringify(reason); option.textContent = reason.display;
        select.appendChild(option);
      }
      const override = document.createElement("button");
      override.textContent = "Override with this reason";
      override.className = "override";
      override.addEventListener("click", () => overrideCard(card, JSON.parse(select.value)));
      div.appendChild(select); div.appendChild(override);
    }
    box.appendChild(div);
  }
}

async function sendFeedback(item) {
  const result = await call("/cds-services/crd-order-sign/feedback", {feedback: [item]});
  status(result.status === 200 ? `Feedback sent (${item.outcome})` : `Feedback failed: ${result.status}`);
}

async function acceptSuggestion(card, suggestion) {
  const entries = state.request.context.draftOrders.entry;
  for (const action of suggestion.actions) {
    if (action.type === "delete") {
      const [type, id] = action.resourceId.split("/");
      const index = entries.findIndex((e) => e.resource.resourceType === type && e.resource.id === id);
      if (index >= 0) entries.splice(index, 1);
    } else if (action.type === "create") {
      entries.push({fullUrl: `urn:uuid:${action.resource.id}`, resource: action.resource});
    } else if (action.type === "update") {
      const index = entries.findIndex((e) => e.resource.resourceType === action.resource.resourceType && e.resource.id === action.resource.id);
      if (index >= 0) entries[index].resource = action.resource;
    }
  }
  if (!entries.length) entries.push({fullUrl: "urn:uuid:placeholder", resource: suggestion.actions[suggestion.actions.length - 1].resource});
  fillEditor();
  await sendFeedback({card: card.uuid, outcome: "accepted", acceptedSuggestions: [{id: suggestion.uuid}],
    outcomeTimestamp: new Date().toISOString().replace(/\.\d+Z$/, "Z")});
  status("Suggestion accepted: the draft order changed; sign again to see the new decision.");
}

async function overrideCard(card, reason) {
  await sendFeedback({card: card.uuid, outcome: "overridden", overrideReason: {reason},
    outcomeTimestamp: new Date().toISOString().replace(/\.\d+Z$/, "Z")});
}

async function sign() {
  applyEditor();
  const body = JSON.parse(JSON.stringify(state.request));
  body.hookInstance = crypto.randomUUID ? crypto.randomUUID() : "00000000-0000-4000-8000-" + String(Date.now()).slice(-12).padStart(12, "0");
  $("raw-request").textContent = JSON.stringify(body, null, 2);
  status("Signing…");
  const result = await call(SIGN, body);
  $("raw-response").textContent = JSON.stringify(result.body, null, 2);
  if (result.status !== 200) {
    status(`The service answered ${result.status}: ${((result.body.issue || [])[0] || {}).diagnostics || ""}`);
    $("raw-response-box").open = true;  // the OperationOutcome says what was wrong
    return;
  }
  $("questionnaire").innerHTML = "";
  renderCoverage(result.body);
  renderCards(result.body);
  status(`Answered: ${(result.body.cards || []).length} card(s)`);
}

// --- the documentation questionnaire (DTR) ------------------------------------------

async function openQuestionnaire(order) {
  const coverage = state.request.prefetch.coverage.entry[0].resource;
  const params = {resourceType: "Parameters", parameter: [{name: "coverage", resource: coverage}, {name: "order", resource: order}]};
  const result = await call("/fhir/Questionnaire/$questionnaire-package", params);
  if (result.status !== 200) { status(`Questionnaire package failed: ${result.status}`); return; }
  const entries = result.body.parameter[0].resource.entry.map((e) => e.resource);
  const questionnaire = entries.find((r) => r.resourceType === "Questionnaire");
  const prefill = entries.find((r) => r.resourceType === "QuestionnaireResponse") || {};
  renderQuestionnaire(questionnaire, prefill, order);
}

function prefilledAnswers(prefill) {
  const out = {};
  const walk = (items) => { for (const item of items || []) { if (item.answer) out[item.linkId] = item.answer[0]; walk(item.item); } };
  walk(prefill.item);
  return out;
}

function fieldFor(item, given) {
  const id = `q-${item.linkId}`;
  if (item.type === "boolean") {
    const value = given ? String(given.valueBoolean) : "";
    return `<select id="${id}" data-type="boolean"><option value="">—</option><option value="true"${value === "true" ? " selected" : ""}>Yes</option><option value="false"${value === "false" ? " selected" : ""}>No</option></select>`;
  }
  if (item.type === "choice" || item.type === "open-choice") {
    const chosen = given && given.valueCoding ? given.valueCoding.code : "";
    const options = (item.answerOption || []).map((o) => `<option value="${escapeHtml(o.valueCoding.code)}"${o.valueCoding.code === chosen ? " selected" : ""}>${escapeHtml(o.valueCoding.display)}</option>`).join("");
    return `<select id="${id}" data-type="choice"${item.repeats ? " multiple" : ""}><option value="">—</option>${options}</select>`;
  }
  const kind = {integer: "number", decimal: "number", date: "date"}[item.type] || "text";
  const value = given ? (given.valueInteger ?? given.valueDecimal ?? given.valueDate ?? given.valueString ?? "") : "";
  return `<input id="${id}" type="${kind}" data-type="${item.type}" value="${escapeHtml(value)}">`;
}

function renderQuestionnaire(questionnaire, prefill, order) {
  const given = prefilledAnswers(prefill);
  let html = `<h3>${escapeHtml(questionnaire.title)}</h3><p class="muted">Answers from the record are filled in; check them and complete the rest.</p><form id="dtr-form">`;
  for (const group of questionnaire.item) {
    html += `<fieldset><legend>${escapeHtml(group.text)}</legend>`;
    for (const item of group.item) {
      if (item.type === "group") {
        html += `<div class="q-item muted">${escapeHtml(item.text)} (history entries: not editable in this bench)</div>`;
        continue;
      }
      html += `<div class="q-item"><label><span class="${item.required ? "required" : ""}">${escapeHtml(item.text)}</span>${fieldFor(item, given[item.linkId])}</label></div>`;
    }
    html += "</fieldset>";
  }
  html += `<button type="submit" class="primary" id="submit-answers">Save answers and sign again</button></form>`;
  $("questionnaire").innerHTML = html;
  $("dtr-form").addEventListener("submit", (event) => { event.preventDefault(); submitAnswers(questionnaire, prefill, order); });
}

function answerOf(item) {
  const field = document.getElementById(`q-${item.linkId}`);
  if (!field) return null;
  if (item.type === "boolean") return field.value ? [{valueBoolean: field.value === "true"}] : null;
  if (item.type === "choice" || item.type === "open-choice") {
    const picked = [...field.selectedOptions].map((o) => o.value).filter(Boolean);
    return picked.length ? picked.map((code) => ({valueCoding: {code}})) : null;
  }
  if (!field.value) return null;
  if (item.type === "integer") return [{valueInteger: parseInt(field.value, 10)}];
  if (item.type === "decimal") return [{valueDecimal: parseFloat(field.value)}];
  if (item.type === "date") return [{valueDate: field.value}];
  return [{valueString: field.value}];
}

async function submitAnswers(questionnaire, prefill, order) {
  const items = [];
  for (const group of questionnaire.item) {
    const children = group.item.map((item) => ({linkId: item.linkId, answer: answerOf(item)})).filter((i) => i.answer);
    if (children.length) items.push({linkId: group.linkId, item: children});
  }
  const response = {resourceType: "QuestionnaireResponse", id: `qr-${Date.now()}`, status: "completed",
    questionnaire: prefill.questionnaire || `${questionnaire.url}|${questionnaire.version}`,
    authored: new Date().toISOString().replace(/\.\d+Z$/, "Z"), item: items};
  await attachAndSign(order, response);
}

// The completed response goes with the order (contained, named in supportingInfo), as a DTR client files it.
async function attachAndSign(order, response) {
  const entry = state.request.context.draftOrders.entry.find((e) => e.resource.resourceType === order.resourceType && e.resource.id === order.id);
  entry.resource.contained = (entry.resource.contained || []).filter((c) => c.resourceType !== "QuestionnaireResponse").concat([response]);
  entry.resource.supportingInfo = [{reference: `#${response.id}`}];
  status("Answers saved with the order; signing again…");
  await sign();
}

// The raw exchange sits below the answer and the questionnaire: the header link opens both parts and
// scrolls there, from wherever the page is.
function showRaw(event) {
  event.preventDefault();
  $("raw-request-box").open = true;
  $("raw-response-box").open = true;
  $("raw-exchange").scrollIntoView({block: "start"});
}

async function init() {
  state.config = (await getJson("/demo/config")).body;
  $("auth-mode").textContent = state.config.authRequired
    ? "Client authentication on: every call is signed with a demo ES384 JWT"
    : "Demo mode: client authentication is off";
  await loadScenarios();
  $("sign").addEventListener("click", sign);
  $("show-raw").addEventListener("click", showRaw);
  $("use-bundle").addEventListener("click", usePastedBundle);
}

init().catch((error) => status(`The bench could not start: ${error}`));
