import { ResultError } from './errors.js';

/** An error as it travels to the peer inside the record. */
export interface SerializedError {
  name: string;
  message: string;
  code?: string;
}

const MAX_ERROR_MESSAGE = 4_096;

/**
 * Turn a handler's result into the JSON stored in the record ('' for undefined).
 * Throws ResultError for what JSON cannot carry faithfully (functions, symbols, BigInt,
 * cycles) and for results larger than `maxBytes`.
 */
export function serializeResult(value: unknown, maxBytes: number): string {
  if (value === undefined) return '';
  if (typeof value === 'function' || typeof value === 'symbol') {
    throw new ResultError(
      'ERR_RESULT_NOT_SERIALISABLE',
      `a task result cannot be a ${typeof value}`,
    );
  }
  let text: string | undefined;
  try {
    text = JSON.stringify(value);
  } catch (err) {
    throw new ResultError(
      'ERR_RESULT_NOT_SERIALISABLE',
      `the task result is not JSON-serialisable: ${(err as Error).message}`,
      { cause: err },
    );
  }
  if (text === undefined) {
    throw new ResultError(
      'ERR_RESULT_NOT_SERIALISABLE',
      'the task result is not JSON-serialisable',
    );
  }
  const bytes = Buffer.byteLength(text);
  if (bytes > maxBytes) {
    throw new ResultError(
      'ERR_RESULT_TOO_LARGE',
      `the task result is ${bytes} bytes, over \`maxResultBytes\` (${maxBytes}); store large results elsewhere and return a reference`,
    );
  }
  return text;
}

export function parseResult(payload: string): unknown {
  return payload === '' ? undefined : JSON.parse(payload);
}

export function serializeError(err: unknown): string {
  const e: SerializedError =
    err instanceof Error
      ? { name: err.name, message: err.message.slice(0, MAX_ERROR_MESSAGE) }
      : { name: 'Error', message: String(err).slice(0, MAX_ERROR_MESSAGE) };
  const code = (err as { code?: unknown } | null)?.code;
  if (typeof code === 'string') e.code = code;
  return JSON.stringify(e);
}

export function parseError(payload: string): SerializedError {
  try {
    const v = JSON.parse(payload) as Partial<SerializedError>;
    if (v && typeof v.message === 'string') {
      return {
        name: String(v.name ?? 'Error'),
        message: v.message,
        ...(v.code ? { code: String(v.code) } : {}),
      };
    }
  } catch {
    // fall through: report the raw text
  }
  return { name: 'Error', message: payload };
}
