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
