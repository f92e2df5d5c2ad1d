/** What the soak's runner (the parent) and its server child say to each other over the IPC channel. */

/** Parent → child. */
export type ToServer = { type: 'stats'; id: number } | { type: 'close'; id: number };

/** The server's own figures: heap after a full GC, RSS, and what its handlers counted. */
export interface ServerStats {
  heapUsed: number;
  rss: number;
  /** The longest event-loop delay since the previous figures, in ms. */
  maxLagMs: number;
  events: number;
  handlerErrors: number;
  loggedErrors: number;
}

/** Child → parent. */
export type FromServer =
  | { type: 'ready'; port: number }
  | { type: 'stats'; id: number; stats: ServerStats }
  | { type: 'closed'; id: number; stats: ServerStats; handles: string[] };

/** The feed handler's frames: its own count and when it made them. */
export interface FeedFrame {
  n: number;
  t: number;
}
