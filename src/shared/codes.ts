/**
 * Reply codes of the Lua scripts in lua/. Every script answers with an array whose
 * first element is one of these. Positive codes are answers, negative codes are
 * rejections or faults. Kept in one place so that every path reports the same thing.
 */
export const ReplyCode = {
  Ok: 1,
  Absent: 0,
  // claim
  Granted: 1,
  Held: 2,
  Done: 3,
  Failed: 4,
  Claimable: 5,
  Resumed: 6,
  /** held by a session whose keys the claim did not declare: asked again with them */
  OwnerUndeclared: 7,
  // faults
  Corrupt: -1,
  NewerFormat: -2,
  ClaimerSessionExpired: -3,
  WrongType: -4,
  // ownership proofs (settle, release, progress)
  UnknownTask: -10,
  NotOwner: -11,
  TokenSuperseded: -12,
  AlreadySettled: -13,
  SessionExpired: -14,
  DeadlinePassed: -15,
  // session
  SessionExists: -16,
  UnknownOp: -17,
  // binding (connection-bound sessions, bind-2.lua)
  NotSubscribed: -18,
  NewerBinding: -19,
  Unsupported: -20,
} as const;

/** Why an owner's write (settle, release, progress) was turned away. */
export type RejectReason =
  | 'unknown-task'
  | 'not-owner'
  | 'token-superseded'
  | 'already-settled'
  | 'session-expired'
  | 'deadline-passed';

export const rejectReasons: Record<number, RejectReason> = {
  [ReplyCode.UnknownTask]: 'unknown-task',
  [ReplyCode.NotOwner]: 'not-owner',
  [ReplyCode.TokenSuperseded]: 'token-superseded',
  [ReplyCode.AlreadySettled]: 'already-settled',
  [ReplyCode.SessionExpired]: 'session-expired',
  [ReplyCode.DeadlinePassed]: 'deadline-passed',
};

/** How a grant came about. */
export type GrantKind =
  | 'fresh'
  | 'session-expired'
  | 'deadline-passed'
  | 'retry'
  | 'handover'
  | 'connection-lost'
  | 'reclaimed';
export const grantKinds: readonly GrantKind[] = [
  'fresh',
  'session-expired',
  'deadline-passed',
  'retry',
  'handover',
  'connection-lost',
  'reclaimed',
];

/**
 * Grants this worker runs as its own: a fresh claim, or its own task taken back after it
 * lost its lease ('reclaimed'); every other kind takes the task over from another worker.
 */
export const ranItself = (kind: GrantKind): boolean => kind === 'fresh' || kind === 'reclaimed';
