import { defineConfig } from 'tsup';

export default defineConfig({
  entry: {
    index: 'src/index.ts',
    testing: 'src/testing/index.ts',
    cli: 'src/cli/main.ts',
    'demo-worker': 'src/demo/worker.ts',
  },
  format: ['esm', 'cjs'],
  dts: { entry: { index: 'src/index.ts', testing: 'src/testing/index.ts' } },
  // import.meta.url in the CommonJS build, used to find the lua/ folder beside dist/
  shims: true,
  clean: true,
  sourcemap: true,
  target: 'node20',
});
