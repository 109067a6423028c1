// The adaptive documentation form (DTR STU2 adaptive questionnaires, SDC $next-question): the service
// asks one criterion's items at a time, pre-filled from the record and earlier answers, and says when
// the decision is settled. Uses app.js's call, fieldFor, answerOf, escapeHtml and attachAndSign.
"use strict";

async function openAdaptive(order, canonical) {
  const coverage = state.request.prefetch.coverage.entry[0].resource;
  const params = {resourceType: "Parameters", parameter: [{name: "coverage", resource: coverage},
    {name: "order", resource: order}, {name: "questionnaire", valueCanonical: canonical.replace("|", "-adaptive|")}]};
  const result = await call("/fhir/Questionnaire/$questionnaire-package", params);
  if (result.status !== 200) { status(`Adaptive form not available (${result.status}); use the questionnaire`); return; }
  const form = result.body.parameter[0].resource.entry[0].resource;
  const response = {resourceType: "QuestionnaireResponse", id: `qr-${Date.now()}`, contained: [form],
    questionnaire: `#${form.id}`, status: "in-progress", authored: new Date().toISOString().replace(/\.\d+Z$/, "Z")};
  await nextQuestion(order, response);
}

async function nextQuestion(order, response) {
  const result = await call("/fhir/Questionnaire/$next-question",
    {resourceType: "Parameters", parameter: [{name: "questionnaire-response", resource: response}]});
  if (result.status !== 200) { status(`Next question failed: ${result.status}`); return; }
  renderAdaptive(order, result.body.parameter[0].resource);
}

function renderAdaptive(order, response) {
  const given = prefilledAnswers(response);
  const items = response.contained[0].item || [];
  const done = response.status === "completed";
  let html = `<h3>${escapeHtml(response.contained[0].title)}</h3><form id="adaptive-form">`;
  html += done
    ? `<p id="adaptive-done" class="good">Nothing more to ask: these answers settle the decision.</p>`
    : `<p class="muted">Only what the record does not show; pre-filled answers come from the record or earlier answers.</p>`;
  for (const item of items) {
    if (item.type === "group") continue;
    html += `<div class="q-item"><label><span class="${item.required ? "required" : ""}">${escapeHtml(item.text)}</span>${fieldFor(item, given[item.linkId])}</label></div>`;
  }
  html += done
    ? `<button type="submit" class="primary" id="adaptive-sign">Sign again with these answers</button></form>`
    : `<button type="submit" class="primary" id="adaptive-next">Next</button></form>`;
  $("questionnaire").innerHTML = html;
  $("adaptive-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const answered = {...response, item: items.map((i) => ({linkId: i.linkId, answer: answerOf(i)})).filter((i) => i.answer)};
    if (done) await attachAndSign(order, answered); else await nextQuestion(order, answered);
  });
}
