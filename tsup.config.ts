import { defineConfig } from 'tsup';

export default defineConfig([
  {
    // the library: ESM and CommonJS, with declarations
    entry: { index: 'src/index.ts', testing: 'src/testing/index.ts' },
    format: ['esm', 'cjs'],
    dts: true,
    // import.meta.url in the CommonJS build, used to find the lua/ folder beside dist/
    shims: true,
    sourcemap: true,
    target: 'node20',
  },
  {
    // executables (the CLI, and the worker processes of the demo and of verify): ESM only,
    // top-level await allowed
    entry: {
      cli: 'src/cli/main.ts',
      'demo-worker': 'src/demo/worker.ts',
      'verify-worker': 'src/verify/worker.ts',
    },
    format: ['esm'],
    sourcemap: true,
    target: 'node20',
  },
]);
