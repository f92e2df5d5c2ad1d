import type { Session } from './session.js';
import type { SessionObserver } from './session-types.js';

/**
 * What the layer built on a session (lib/nest) may do with it beyond its public API — hear of the peer's streams and of
 * the session's end, hold its reading — without a public member that anyone holding a session could reach. Session's
 * static block provides it. Package-internal: the barrel exports none of this.
 */
interface LayerAccess {
  observe(session: Session, observer: SessionObserver): () => void;
  hold(session: Session, hold: boolean, standingStreams: number): void;
}

let access!: LayerAccess; // set as session.ts is evaluated, before any Session exists

/** Called once, by Session's static block. */
export function provideLayerAccess(provided: LayerAccess): void {
  access = provided;
}

/**
 * Lets a layer built on `session` hear of its peer's streams and its end without a public listener (see
 * {@link SessionObserver}); returns what removes the observer.
 */
export function observeSession(session: Session, observer: SessionObserver): () => void {
  return access.observe(session, observer);
}

/**
 * Lets the layer built on `session` stop its reading (`hold` true) until it lets go (false): backpressure for work the
 * peer starts that nothing else bounds (a server's event handlers). Keep-alive does not count the silence meanwhile.
 * The hold waits while streams of the session's own are open, but for `standingStreams` that stay open (a control
 * stream we opened): their answers, and the window updates their writes need, come through the same socket, and the
 * work that holds reading may be waiting on them (a handler calling the peer back).
 */
export function holdReading(session: Session, hold: boolean, standingStreams = 0): void {
  access.hold(session, hold, standingStreams);
}
