#!/usr/bin/env node
// Checks Sentinel analytics rules the way Sentinel would before running them:
//
// 1. the KQL is parsed and semantically analysed by Microsoft's own Kusto language service
//    (@kusto/language-service-next, the engine behind the Kusto editors) against the
//    DeviceNetworkEvents schema, so an unknown column, function or type mismatch is an error;
// 2. the rule's fields pass the field and limit checks of Sentinel's template validator
//    (id, kind, name, description, severity, data connectors, frequency and period, trigger,
//    tactics and techniques, query length, entity mappings, custom details, grouping, alert
//    details, version); every column the rule maps must be a column the query returns, which
//    the analyser's result type tells.
//
// Usage: node check.js [--json] FILE...
//   FILE: a rule as Sentinel content-repository YAML (.yaml/.yml), an ARM template (.json),
//   or a bare query (.kql, KQL checks only).
// Prints one line per file (a JSON object with --json); exits 1 when any file has a problem.
'use strict';

const fs = require('fs');
const path = require('path');
const YAML = require('yaml');

function loadKusto() {
  let dir;
  try {
    dir = path.dirname(require.resolve('@kusto/language-service-next/package.json'));
  } catch (e) {
    console.error('check.js: @kusto/language-service-next is not installed: run `npm ci` in ' + __dirname);
    process.exit(2);
  }
  // The package is a Bridge.NET build of Kusto.Language: the runtime first, then the library;
  // both define globals.
  require(path.join(dir, 'bridge.js'));
  require(path.join(dir, 'Kusto.Language.Bridge.js'));
  return globalThis.Kusto.Language;
}

const K = loadKusto();

// DeviceNetworkEvents as Sentinel / Log Analytics holds it (Defender's Advanced Hunting columns
// plus TimeGenerated, TenantId, SourceSystem, Type; AdditionalFields is dynamic there).
const SCHEMA = [
  ['TenantId', 'string'], ['TimeGenerated', 'datetime'], ['Timestamp', 'datetime'],
  ['DeviceId', 'string'], ['DeviceName', 'string'], ['ActionType', 'string'],
  ['RemoteIP', 'string'], ['RemotePort', 'int'], ['RemoteUrl', 'string'],
  ['LocalIP', 'string'], ['LocalPort', 'int'], ['Protocol', 'string'],
  ['LocalIPType', 'string'], ['RemoteIPType', 'string'], ['ReportId', 'long'],
  ['AppGuardContainerId', 'string'], ['AdditionalFields', 'dynamic'], ['MachineGroup', 'string'],
  ['InitiatingProcessSHA1', 'string'], ['InitiatingProcessSHA256', 'string'],
  ['InitiatingProcessMD5', 'string'], ['InitiatingProcessFileName', 'string'],
  ['InitiatingProcessFileSize', 'long'], ['InitiatingProcessVersionInfoCompanyName', 'string'],
  ['InitiatingProcessVersionInfoProductName', 'string'],
  ['InitiatingProcessVersionInfoProductVersion', 'string'],
  ['InitiatingProcessVersionInfoInternalFileName', 'string'],
  ['InitiatingProcessVersionInfoOriginalFileName', 'string'],
  ['InitiatingProcessVersionInfoFileDescription', 'string'], ['InitiatingProcessId', 'long'],
  ['InitiatingProcessCommandLine', 'string'], ['InitiatingProcessCreationTime', 'datetime'],
  ['InitiatingProcessFolderPath', 'string'], ['InitiatingProcessParentFileName', 'string'],
  ['InitiatingProcessParentId', 'long'], ['InitiatingProcessParentCreationTime', 'datetime'],
  ['InitiatingProcessAccountDomain', 'string'], ['InitiatingProcessAccountName', 'string'],
  ['InitiatingProcessAccountSid', 'string'], ['InitiatingProcessAccountUpn', 'string'],
  ['InitiatingProcessAccountObjectId', 'string'], ['InitiatingProcessIntegrityLevel', 'string'],
  ['InitiatingProcessTokenElevation', 'string'], ['InitiatingProcessSessionId', 'long'],
  ['IsInitiatingProcessRemoteSession', 'bool'],
  ['InitiatingProcessRemoteSessionDeviceName', 'string'],
  ['InitiatingProcessRemoteSessionIP', 'string'], ['InitiatingProcessUniqueId', 'string'],
  ['SourceSystem', 'string'], ['Type', 'string'],
];

const table = new K.Symbols.TableSymbol.$ctor7(
  'DeviceNetworkEvents',
  '(' + SCHEMA.map(([n, t]) => `${n}:${t}`).join(', ') + ')',
  null,
);
const globals = K.GlobalState.Default.WithDatabase(new K.Symbols.DatabaseSymbol.ctor('sentinel', [table]));

function list(netList) {
  const out = [];
  if (!netList) return out;
  const n = netList.Count;
  for (let i = 0; i < n; i++) out.push(netList.getItem(i));
  return out;
}

/** Kusto diagnostics of `query`, and the columns it returns (null when not a table). */
function analyse(query) {
  const code = K.KustoCode.ParseAndAnalyze(query, globals);
  const diagnostics = list(code.GetDiagnostics()).map((d) => {
    const before = query.slice(0, d.Start);
    const line = before.split('\n').length;
    return {
      severity: d.Severity, code: d.Code, message: d.Message, line,
      text: query.substr(d.Start, d.Length),
    };
  });
  let columns = null;
  const rt = code.ResultType;
  if (rt && rt.Columns) columns = list(rt.Columns).map((c) => c.Name);
  return { diagnostics, columns };
}

const GUID = /^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$/;
const SEVERITIES = ['Informational', 'Low', 'Medium', 'High'];
const TACTICS = [
  'Reconnaissance', 'ResourceDevelopment', 'InitialAccess', 'Execution', 'Persistence',
  'PrivilegeEscalation', 'DefenseEvasion', 'CredentialAccess', 'Discovery', 'LateralMovement',
  'Collection', 'Exfiltration', 'CommandAndControl', 'Impact', 'PreAttack',
  'ImpairProcessControl', 'InhibitResponseFunction',
];
// The tactic(s) of each technique the rules may name (MITRE ATT&CK Enterprise). A technique
// whose tactic is not among the rule's tactics is an error, as in Sentinel's validator; a
// technique missing here is reported rather than guessed.
const TECHNIQUE_TACTICS = {
  T1498: ['Impact'], T1499: ['Impact'], T1496: ['Impact'], T1489: ['Impact'],
  T1608: ['ResourceDevelopment'], T1583: ['ResourceDevelopment'], T1584: ['ResourceDevelopment'],
  T1071: ['CommandAndControl'], T1090: ['CommandAndControl'], T1595: ['Reconnaissance'],
  T1046: ['Discovery'],
};
const ENTITY_IDENTIFIERS = {
  Host: ['DnsDomain', 'NTDomain', 'HostName', 'FullName', 'NetBiosName', 'AzureID', 'OMSAgentID', 'OSFamily', 'OSVersion'],
  IP: ['Address'],
  Account: ['Name', 'FullName', 'NTDomain', 'DnsDomain', 'UPNSuffix', 'Sid', 'AadTenantId', 'AadUserId', 'PUID', 'IsDomainJoined', 'DisplayName', 'ObjectGuid'],
  URL: ['Url'],
  DNS: ['DomainName'],
};
const YAML_OPERATORS = ['gt', 'lt', 'eq', 'ne'];
const ARM_OPERATORS = { GreaterThan: 'gt', LessThan: 'lt', Equal: 'eq', NotEqual: 'ne' };

/** Seconds of a YAML duration (`5m`, `1h`, `14d`) or an ISO 8601 one (`PT5M`, `P1D`). */
function seconds(s) {
  if (typeof s !== 'string') return null;
  let m = /^(\d+)([smhd])$/.exec(s);
  if (m) return Number(m[1]) * { s: 1, m: 60, h: 3600, d: 86400 }[m[2]];
  m = /^P(?:(\d+)D)?(?:T(?:(\d+)H)?(?:(\d+)M)?(?:(\d+)S)?)?$/.exec(s);
  if (m && s !== 'P' && !s.endsWith('T')) {
    return (Number(m[1] || 0) * 86400) + (Number(m[2] || 0) * 3600) + (Number(m[3] || 0) * 60) + Number(m[4] || 0);
  }
  return null;
}

/** The rule of a YAML document, in one shape for both sources. */
function fromYaml(doc) {
  return {
    id: doc.id, kind: doc.kind, name: doc.name, description: doc.description,
    severity: doc.severity, requiredDataConnectors: doc.requiredDataConnectors,
    queryFrequency: seconds(doc.queryFrequency), queryPeriod: seconds(doc.queryPeriod),
    rawFrequency: doc.queryFrequency, rawPeriod: doc.queryPeriod,
    triggerOperator: YAML_OPERATORS.includes(doc.triggerOperator) ? doc.triggerOperator : `invalid:${doc.triggerOperator}`,
    triggerThreshold: doc.triggerThreshold, tactics: doc.tactics,
    techniques: doc.relevantTechniques, query: doc.query, entityMappings: doc.entityMappings,
    customDetails: doc.customDetails, eventGroupingSettings: doc.eventGroupingSettings,
    alertDetailsOverride: doc.alertDetailsOverride, version: doc.version,
  };
}

/** The rules of an ARM template (each alertRules resource), in the same shape. */
function fromArm(doc, problems) {
  const rules = [];
  for (const r of doc.resources || []) {
    if (!/alertRules$/.test(r.type || '')) continue;
    const p = r.properties || {};
    const m = /\/([0-9a-fA-F-]{36})'\)\]$/.exec(r.name || '');
    if (!m) problems.push(`resource name ${JSON.stringify(r.name)} does not end in the rule's GUID`);
    if (p.alertRuleTemplateName && m && p.alertRuleTemplateName !== m[1]) {
      problems.push('alertRuleTemplateName differs from the GUID in the resource name');
    }
    rules.push({
      id: m ? m[1] : undefined, kind: r.kind, name: p.displayName, description: p.description,
      severity: p.severity, requiredDataConnectors: undefined,
      queryFrequency: seconds(p.queryFrequency), queryPeriod: seconds(p.queryPeriod),
      rawFrequency: p.queryFrequency, rawPeriod: p.queryPeriod,
      triggerOperator: ARM_OPERATORS[p.triggerOperator] || `invalid:${p.triggerOperator}`,
      triggerThreshold: p.triggerThreshold, tactics: p.tactics,
      techniques: [...(p.techniques || []), ...(p.subTechniques || [])], query: p.query,
      entityMappings: p.entityMappings, customDetails: p.customDetails,
      eventGroupingSettings: p.eventGroupingSettings, alertDetailsOverride: p.alertDetailsOverride,
      version: p.templateVersion,
    });
  }
  if (rules.length === 0) problems.push('no Microsoft.SecurityInsights alertRules resource in the template');
  return rules;
}

/** Sentinel's template validator's field and limit checks; `columns` are the query's. */
function validate(rule, columns, fromYamlFile) {
  const p = [];
  const str = (v) => typeof v === 'string' && v.length > 0;
  if (!str(rule.id) || !GUID.test(rule.id)) p.push(`id: not a GUID: ${JSON.stringify(rule.id)}`);
  if (!['Scheduled', 'NRT'].includes(rule.kind)) p.push(`kind: ${JSON.stringify(rule.kind)} is not Scheduled or NRT`);
  if (!str(rule.name)) p.push('name: missing');
  else if (rule.name.length > 256) p.push(`name: ${rule.name.length} characters (at most 256)`);
  if (!str(rule.description)) p.push('description: missing');
  else if (rule.description.length > 5000) p.push(`description: ${rule.description.length} characters (at most 5000)`);
  if (!SEVERITIES.includes(rule.severity)) p.push(`severity: ${JSON.stringify(rule.severity)} is not one of ${SEVERITIES.join(', ')}`);
  if (fromYamlFile) {
    const dc = rule.requiredDataConnectors;
    const ok = Array.isArray(dc) && dc.some((c) => c && c.connectorId === 'MicrosoftThreatProtection'
      && Array.isArray(c.dataTypes) && c.dataTypes.includes('DeviceNetworkEvents'));
    if (!ok) p.push('requiredDataConnectors: needs connectorId MicrosoftThreatProtection with dataTypes [DeviceNetworkEvents]');
  }
  const f = rule.queryFrequency;
  const per = rule.queryPeriod;
  if (f === null) p.push(`queryFrequency: not a duration: ${JSON.stringify(rule.rawFrequency)}`);
  else if (f < 300 || f > 14 * 86400) p.push(`queryFrequency: ${rule.rawFrequency} outside 5m..14d`);
  if (per === null) p.push(`queryPeriod: not a duration: ${JSON.stringify(rule.rawPeriod)}`);
  else if (per < 300 || per > 14 * 86400) p.push(`queryPeriod: ${rule.rawPeriod} outside 5m..14d`);
  if (f !== null && per !== null && per < f) p.push('queryPeriod is shorter than queryFrequency');
  if (rule.triggerOperator.startsWith('invalid:')) p.push(`triggerOperator: ${rule.triggerOperator.slice(8)} is not gt/lt/eq/ne`);
  if (!Number.isInteger(rule.triggerThreshold) || rule.triggerThreshold < 0 || rule.triggerThreshold > 10000) {
    p.push(`triggerThreshold: ${JSON.stringify(rule.triggerThreshold)} is not an integer in 0..10000`);
  }
  const tactics = Array.isArray(rule.tactics) ? rule.tactics : [];
  if (tactics.length === 0) p.push('tactics: none');
  for (const t of tactics) if (!TACTICS.includes(t)) p.push(`tactics: unknown tactic ${JSON.stringify(t)}`);
  for (const t of rule.techniques || []) {
    const m = /^(T\d{4})(\.\d{3})?$/.exec(t);
    if (!m) { p.push(`techniques: ${JSON.stringify(t)} is not T#### or T####.###`); continue; }
    const need = TECHNIQUE_TACTICS[m[1]];
    if (!need) p.push(`techniques: ${t}: tactic not known to this checker`);
    else if (!need.some((x) => tactics.includes(x))) p.push(`techniques: ${t} needs tactic ${need.join(' or ')}`);
  }
  if (!str(rule.query)) p.push('query: missing');
  else if (rule.query.length > 10000) p.push(`query: ${rule.query.length} characters (at most 10000)`);
  const has = (c) => columns === null || columns.includes(c);
  const em = rule.entityMappings;
  if (!Array.isArray(em) || em.length < 1 || em.length > 5) p.push('entityMappings: needs 1 to 5 mappings');
  for (const m of Array.isArray(em) ? em : []) {
    const ids = ENTITY_IDENTIFIERS[m.entityType];
    if (!ids) { p.push(`entityMappings: unknown entityType ${JSON.stringify(m.entityType)}`); continue; }
    const fm = m.fieldMappings;
    if (!Array.isArray(fm) || fm.length < 1 || fm.length > 3) p.push(`entityMappings: ${m.entityType} needs 1 to 3 fieldMappings`);
    for (const x of Array.isArray(fm) ? fm : []) {
      if (!ids.includes(x.identifier)) p.push(`entityMappings: ${m.entityType} has no identifier ${JSON.stringify(x.identifier)}`);
      if (!has(x.columnName)) p.push(`entityMappings: column ${JSON.stringify(x.columnName)} is not returned by the query`);
    }
  }
  const cd = rule.customDetails || {};
  const keys = Object.keys(cd);
  if (keys.length > 20) p.push(`customDetails: ${keys.length} keys (at most 20)`);
  for (const k of keys) {
    if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(k)) p.push(`customDetails: key ${JSON.stringify(k)} is not alphanumeric`);
    if (!has(cd[k])) p.push(`customDetails: ${k}: column ${JSON.stringify(cd[k])} is not returned by the query`);
  }
  const eg = rule.eventGroupingSettings;
  if (eg && !['SingleAlert', 'AlertPerResult'].includes(eg.aggregationKind)) {
    p.push(`eventGroupingSettings.aggregationKind: ${JSON.stringify(eg.aggregationKind)}`);
  }
  const ad = rule.alertDetailsOverride;
  if (ad) {
    const formats = [['alertDisplayNameFormat', 256], ['alertDescriptionFormat', 5000]];
    for (const [key, max] of formats) {
      const v = ad[key];
      if (v === undefined) continue;
      if (!str(v) || v.length > max) p.push(`alertDetailsOverride.${key}: empty or over ${max} characters`);
      const params = [...String(v).matchAll(/\{\{([^}]*)\}\}/g)].map((x) => x[1]);
      if (params.length > 3) p.push(`alertDetailsOverride.${key}: ${params.length} parameters (at most 3)`);
      for (const c of params) if (!has(c)) p.push(`alertDetailsOverride.${key}: {{${c}}} is not a column of the query`);
    }
    for (const key of ['alertSeverityColumnName', 'alertTacticsColumnName']) {
      if (ad[key] !== undefined && !has(ad[key])) p.push(`alertDetailsOverride.${key}: ${ad[key]} is not a column of the query`);
    }
  }
  if (!/^\d+\.\d+\.\d+$/.test(String(rule.version))) p.push(`version: ${JSON.stringify(rule.version)} is not X.Y.Z`);
  return p;
}

function checkFile(file) {
  const text = fs.readFileSync(file, 'utf8');
  const out = { file, kind: null, problems: [], diagnostics: [], columns: null, rules: [] };
  let rules = [];
  if (/\.kql$/i.test(file)) {
    out.kind = 'kql';
    const a = analyse(text);
    out.diagnostics = a.diagnostics;
    out.columns = a.columns;
  } else {
    if (/\.json$/i.test(file)) {
      out.kind = 'arm';
      let doc;
      try { doc = JSON.parse(text); } catch (e) { out.problems.push(`not JSON: ${e.message}`); return out; }
      rules = fromArm(doc, out.problems);
    } else {
      out.kind = 'yaml';
      const doc = YAML.parse(text, { strict: true, uniqueKeys: true });
      if (!doc || typeof doc !== 'object') { out.problems.push('not a YAML mapping'); return out; }
      rules = [fromYaml(doc)];
    }
    for (const r of rules) {
      const a = analyse(String(r.query || ''));
      out.diagnostics.push(...a.diagnostics);
      out.columns = a.columns;
      if (a.columns === null) out.problems.push('query: does not return a table');
      out.problems.push(...validate(r, a.columns, out.kind === 'yaml'));
      const { rawFrequency, rawPeriod, requiredDataConnectors, ...same } = r;
      // Order of techniques carries no meaning (ARM keeps sub-techniques apart).
      if (Array.isArray(same.techniques)) same.techniques = [...same.techniques].sort();
      out.rules.push(same);
    }
  }
  for (const d of out.diagnostics) {
    if (d.severity === 'Error') out.problems.push(`KQL ${d.code} line ${d.line}: ${d.message} (${JSON.stringify(d.text)})`);
  }
  return out;
}

function main() {
  const args = process.argv.slice(2);
  const json = args[0] === '--json';
  const files = json ? args.slice(1) : args;
  if (files.length === 0) {
    console.error('usage: node check.js [--json] FILE.yaml|FILE.json|FILE.kql...');
    process.exit(2);
  }
  let bad = 0;
  for (const f of files) {
    let r;
    try {
      r = checkFile(f);
    } catch (e) {
      r = { file: f, kind: null, problems: [`cannot check: ${e.message}`], diagnostics: [], columns: null, rules: [] };
    }
    if (r.problems.length) bad++;
    if (json) {
      console.log(JSON.stringify(r));
    } else {
      const warn = r.diagnostics.filter((d) => d.severity !== 'Error').length;
      console.log(`${f}: ${r.problems.length ? 'FAIL' : 'ok'} (${r.kind}, ${r.diagnostics.length - warn} KQL errors, ${warn} other diagnostics)`);
      for (const p of r.problems) console.log(`  ${p}`);
    }
  }
  process.exit(bad ? 1 : 0);
}

main();
