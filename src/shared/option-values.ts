import { InvalidOptionError } from './errors.js';

/* The value checks of the options (options.ts): each message names the option to change. */

export function describe(value: unknown): string {
  return `\`${String(value)}\` (${typeof value})`;
}

/** Node's timers fire at once past this many ms, so no duration that drives a timer may exceed it. */
export const MAX_TIMER_MS = 2_147_483_647;
/** Retention only lives in Redis (PX); ten years keeps every server time exact in Lua. */
export const MAX_RETENTION_MS = 315_360_000_000;

export function number(
  name: string,
  value: unknown,
  {
    min,
    max = MAX_TIMER_MS,
    integer = true,
    allowInfinity = false,
  }: { min: number; max?: number; integer?: boolean; allowInfinity?: boolean },
): number {
  const ok =
    typeof value === 'number' &&
    !Number.isNaN(value) &&
    ((Number.isFinite(value) && value <= max) ||
      (allowInfinity && value === Number.POSITIVE_INFINITY)) &&
    value >= min &&
    (!integer || !Number.isFinite(value) || Number.isInteger(value));
  if (!ok) {
    const kind = integer ? 'an integer' : 'a number';
    const range = allowInfinity ? `>= ${min} (or Infinity)` : `from ${min} to ${max}`;
    throw new InvalidOptionError(
      `Expected \`${name}\` to be ${kind} ${range}, got ${describe(value)}`,
    );
  }
  return value as number;
}
