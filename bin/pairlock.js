#!/usr/bin/env node
// The `pairlock` command. An installed package runs the build (dist/cli.js); a source
// checkout without a build runs the TypeScript entry through tsx.
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

const built = new URL('../dist/cli.js', import.meta.url);
if (existsSync(fileURLToPath(built))) {
  await import(built.href);
} else {
  let register;
  try {
    ({ register } = await import('tsx/esm/api'));
  } catch {
    process.stderr.write(
      'pairlock: dist/cli.js is missing and tsx is not installed; run `npm run build` or `npm install`\n',
    );
    process.exit(1);
  }
  register();
  await import(new URL('../src/cli/main.ts', import.meta.url).href);
}
