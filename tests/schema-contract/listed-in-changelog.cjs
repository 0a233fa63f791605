// A graphql-inspector diff rule: a breaking change whose path is listed, in backticks,
// under "## Unreleased" in docs/schema-changelog.md is announced, so it is reported as
// dangerous instead of breaking; every other breaking change still fails the check.
const fs = require('fs');
const path = require('path');

const CHANGELOG = process.env.SCHEMA_CHANGELOG
  ?? path.join(__dirname, '..', '..', 'docs', 'schema-changelog.md');

function listedPaths() {
  const text = fs.readFileSync(CHANGELOG, 'utf8');
  const start = text.search(/^## Unreleased\s*$/m);
  if (start < 0) return new Set();
  const rest = text.slice(start).split('\n').slice(1);
  const end = rest.findIndex((line) => line.startsWith('## '));
  const section = (end < 0 ? rest : rest.slice(0, end)).join('\n');
  return new Set([...section.matchAll(/`([^`]+)`/g)].map((m) => m[1]));
}

module.exports = ({ changes }) => {
  const listed = listedPaths();
  return changes.map((change) => {
    if (change.criticality.level !== 'BREAKING' || !change.path || !listed.has(change.path)) {
      return change;
    }
    return {
      ...change,
      criticality: {
        ...change.criticality,
        level: 'DANGEROUS',
        reason: `announced in docs/schema-changelog.md (${change.criticality.reason ?? 'breaking'})`,
      },
    };
  });
};
