import { createHash } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Cluster, Redis } from 'ioredis';

/**
 * The Lua layer. One file per transition in lua/, named `<name>-<numberOfKeys>.lua`
 * (`<name>.lua` when the caller passes the key count); shared pieces in lua/includes/
 * are inlined where a script says `--- @include "includes/<file>"`.
 *
 * Scripts are registered with ioredis `defineCommand` under a name that carries a hash
 * of their text, so two versions of pairlock sharing one Redis never run each other's
 * code, and ioredis falls back from EVALSHA to EVAL after a failover or SCRIPT FLUSH.
 */
export const scriptNames = [
  'claim',
  'settle',
  'release',
  'progress',
  'session',
  'inspect',
  'peek',
  'cover',
  'bind',
  'fencedWrite',
  'undo',
  'repair',
] as const;
export type ScriptName = (typeof scriptNames)[number];

export interface ScriptDef {
  readonly name: ScriptName;
  /** The ioredis command name, `pl_<name>_<hash>`. */
  readonly command: string;
  readonly numberOfKeys: number | undefined;
  readonly lua: string;
  readonly sha1: string;
}

// lua/ sits at the package root: beside dist/ once built, two levels above this file in
// the sources; the nearest lua/ up from here is it
const luaDir = findLuaDir(path.dirname(fileURLToPath(import.meta.url)));

function findLuaDir(from: string): string {
  for (let dir = from; ; dir = path.dirname(dir)) {
    const candidate = path.join(dir, 'lua');
    if (existsSync(path.join(candidate, 'claim.lua'))) return candidate + path.sep;
    if (path.dirname(dir) === dir) throw new Error(`pairlock: no lua/ folder above ${from}`);
  }
}

const fileOf: Record<ScriptName, string> = {
  claim: 'claim.lua',
  settle: 'settle.lua',
  release: 'release.lua',
  progress: 'progress.lua',
  session: 'session-2.lua',
  bind: 'bind-2.lua',
  inspect: 'inspect.lua',
  peek: 'peek.lua',
  cover: 'cover.lua',
  fencedWrite: 'fencedWrite-1.lua',
  undo: 'undo-2.lua',
  repair: 'repair-2.lua',
};

function inline(text: string, seen: Set<string>): string {
  return text.replace(/^--- @include "([^"]+)"\s*$/gm, (_line, include: string) => {
    if (seen.has(include)) return '';
    seen.add(include);
    return inline(readFileSync(`${luaDir}${include}.lua`, 'utf8'), seen);
  });
}

let cache: Record<ScriptName, ScriptDef> | undefined;

export function loadScripts(): Record<ScriptName, ScriptDef> {
  if (cache) return cache;
  const out = {} as Record<ScriptName, ScriptDef>;
  for (const name of scriptNames) {
    const file = fileOf[name];
    const lua = inline(readFileSync(`${luaDir}${file}`, 'utf8'), new Set());
    const keys = /-(\d+)\.lua$/.exec(file)?.[1];
    const sha1 = createHash('sha1').update(lua).digest('hex');
    out[name] = {
      name,
      command: `pl_${name}_${sha1.slice(0, 10)}`,
      numberOfKeys: keys === undefined ? undefined : Number(keys),
      lua,
      sha1,
    };
  }
  cache = out;
  return out;
}

type Client = Redis | Cluster;
const defined = new WeakSet<Client>();

/** Define every script on a client once. */
export function defineScripts(client: Client): void {
  if (defined.has(client)) return;
  for (const def of Object.values(loadScripts())) {
    if (def.numberOfKeys === undefined) client.defineCommand(def.command, { lua: def.lua });
    else client.defineCommand(def.command, { lua: def.lua, numberOfKeys: def.numberOfKeys });
  }
  defined.add(client);
}

/** Call a defined script. The typed wrappers in store.ts are the only callers. */
export function callScript(
  client: Client,
  name: ScriptName,
  args: readonly (string | number)[],
): Promise<unknown> {
  defineScripts(client);
  const command = loadScripts()[name].command;
  const fn = (client as unknown as Record<string, (...a: (string | number)[]) => Promise<unknown>>)[
    command
  ];
  if (typeof fn !== 'function') throw new Error(`script ${name} is not defined on this client`);
  return fn.apply(client, args as (string | number)[]);
}
