/** The `pairlock` CLI entry (built to dist/cli.js; bin/pairlock.js runs it). */
import { main } from './program.js';

main(process.argv).then(
  (code) => process.exit(code),
  (err: unknown) => {
    process.stderr.write(`pairlock: ${String(err)}\n`);
    process.exit(1);
  },
);
