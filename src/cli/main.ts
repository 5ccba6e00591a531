/** The `pairlock` CLI entry (built to dist/cli.js; bin/pairlock.js runs it). */
import { exitWhenFlushed, tolerateClosedReaders } from './exit.js';
import { main } from './program.js';

tolerateClosedReaders();
main(process.argv).then(exitWhenFlushed, (err: unknown) => {
  process.stderr.write(`pairlock: ${String(err)}\n`);
  return exitWhenFlushed(1);
});
