/** Exit codes of the `pairlock` CLI. */
export const ExitCode = {
  Ok: 0,
  Error: 1,
  Unreachable: 2,
  UnknownTask: 3,
} as const;

/** An error that ends the command with a message on stderr and a given exit code. */
export class CliError extends Error {
  constructor(
    message: string,
    readonly exitCode: number,
  ) {
    super(message);
    this.name = 'CliError';
  }
}

/**
 * A reader that went away (`pairlock list | head -1`: EPIPE) is not an error of the
 * command: what it writes after that is dropped instead of crashing the process.
 */
export function tolerateClosedReaders(): void {
  const ignore = () => {};
  process.stdout.on('error', ignore);
  process.stderr.on('error', ignore);
}

/** Resolves once everything written to `stream` so far has been handed to the OS. */
function flushed(stream: NodeJS.WriteStream): Promise<void> {
  return new Promise((resolve) => {
    // a closed reader (`| head`): nothing more can arrive, and nothing is waited for
    if (stream.destroyed || !stream.writable) {
      resolve();
      return;
    }
    stream.once('error', () => resolve());
    // writes complete in order: this callback runs after every earlier write is done
    stream.write('', () => resolve());
  });
}

/**
 * End the process with `code` once stdout and stderr are flushed. On a pipe Node writes
 * asynchronously: `process.exit()` right after a large write cuts the output at what the
 * pipe held (64 KiB), so a reader such as `| node -e 'JSON.parse(…)'` gets half a record.
 */
export async function exitWhenFlushed(code: number): Promise<never> {
  await Promise.all([flushed(process.stdout), flushed(process.stderr)]);
  process.exit(code);
}
