/**
 * The chaos checker as a command: checks a run directory again and prints its table.
 * The checker itself is src/verify/check.ts (shared with `pairlock verify`).
 *
 *   npx tsx test/chaos/check.ts <run directory>
 */
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { check, formatReport } from '../../src/verify/check.js';

export { check, formatReport };

if (process.argv[1] && fileURLToPath(import.meta.url) === path.resolve(process.argv[1])) {
  const dir = process.argv[2];
  if (!dir) {
    console.error('usage: tsx test/chaos/check.ts <run directory>');
    process.exit(2);
  }
  const report = check(dir);
  console.log(formatReport(report));
  process.exit(report.ok ? 0 : 1);
}
