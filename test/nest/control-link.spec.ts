/**
 * ControlLink — PING, PONG and DRAIN on a connection's control stream — on its own with a fake clock: the messages
 * it writes are decoded back, the peer's are fed in. The end-to-end behaviour (the hello naming the feature, a
 * drained client moving its calls) is in drain.spec.ts.
 */
import { describe, expect, test } from '@jest/globals';
import { type CallMessage, encodeMessage, Kind } from '../../lib/nest/call-codec.js';
import { ControlLink } from '../../lib/nest/control-link.js';
import { MessageReader } from '../../lib/nest/message-reader.js';
import { FakeClock } from '../helpers/fake-clock.js';
import { rejection } from './helpers.js';

/** A link whose writes are decoded into `sent`; `queued` and `open` stand for its control stream's state. */
function link(peerFeatures: unknown = ['control']) {
  const clock = new FakeClock();
  const sent: CallMessage[] = [];
  const drains: string[] = [];
  const reader = new MessageReader(1 << 20);
  const stream = { queued: 0, open: true };
  const control = new ControlLink(
    {
      clock,
      write: (buffers) => reader.push(Buffer.concat(buffers), { onMessage: (m) => void sent.push(m) }),
      get queuedBytes() {
        return stream.queued;
      },
      get open() {
        return stream.open;
      },
      drain: (reason) => void drains.push(reason),
    },
    peerFeatures,
  );
  return { clock, sent, drains, stream, control };
}

const peer = (kind: number, fields: { id?: string } = {}, body?: unknown): CallMessage => {
  const reader = new MessageReader(1 << 20);
  let message: CallMessage | null = null;
  reader.push(Buffer.concat(encodeMessage(kind, 0, body, fields)), { onMessage: (m) => void (message = m) });
  return message!;
};

describe('ControlLink', () => {
  test('ping() sends PING with a fresh ID and resolves with the round trip when the PONG of that ID comes back', async () => {
    const { clock, sent, control } = link();
    expect(control.rtt).toBeNull();
    const first = control.ping(1_000);
    const second = control.ping(1_000);
    expect(sent.map((m) => [m.kind, m.id])).toEqual([
      [Kind.PING, '1'],
      [Kind.PING, '2'],
    ]);
    clock.advance(7);
    control.receive(peer(Kind.PONG, { id: '2' }));
    clock.advance(5);
    control.receive(peer(Kind.PONG, { id: '1' }));
    control.receive(peer(Kind.PONG, { id: '1' })); // a duplicate is ignored
    await expect(second).resolves.toBe(7);
    await expect(first).resolves.toBe(12);
    expect(control.rtt).toBe(12);
  });

  test('a PING is answered with a PONG of the same ID; not while the control stream has 16 KiB queued (a peer that never reads)', () => {
    const { sent, stream, control } = link();
    control.receive(peer(Kind.PING, { id: 'abc' }));
    expect(sent.map((m) => [m.kind, m.id])).toEqual([[Kind.PONG, 'abc']]);
    stream.queued = 16 * 1024 + 1;
    control.receive(peer(Kind.PING, { id: 'def' }));
    stream.open = false;
    stream.queued = 0;
    control.receive(peer(Kind.PING, { id: 'ghi' }));
    expect(sent).toHaveLength(1);
  });

  test('no PONG within the timeout: ERR_SMUX_TIMEOUT (retryable); the late PONG changes nothing', async () => {
    const { clock, control } = link();
    const ping = control.ping(500);
    clock.advance(499);
    clock.advance(1);
    expect(await rejection(ping)).toMatchObject({ code: 'ERR_SMUX_TIMEOUT', retryable: true });
    control.receive(peer(Kind.PONG, { id: '1' }));
    expect(control.rtt).toBeNull();
    expect(clock.pending).toBe(0);
  });

  test('a peer that did not name the control feature is never sent PING or DRAIN', async () => {
    for (const features of [null, [], ['something-else'], 'control']) {
      const { sent, control } = link(features);
      expect(control.peerReads).toBe(false);
      expect(await rejection(control.ping(100))).toMatchObject({ code: 'ERR_SMUX_UNAVAILABLE' });
      expect(control.drain('age')).toBe(false);
      expect(sent).toEqual([]);
    }
  });

  test('drain() writes DRAIN with the reason; a DRAIN received is reported to the host with its reason', () => {
    const { sent, drains, control } = link();
    expect(control.drain('the connection reached its maxConnectionAge')).toBe(true);
    expect(sent.map((m) => [m.kind, m.body])).toEqual([[Kind.DRAIN, { reason: 'the connection reached its maxConnectionAge' }]]);
    control.receive(peer(Kind.DRAIN, {}, { reason: 'the server is shutting down' }));
    control.receive(peer(Kind.DRAIN, {}, 'not an object'));
    expect(drains).toEqual(['the server is shutting down', 'the server asked']);
  });

  test('close() fails the pings in flight with its error and every later one; no timer is left', async () => {
    const { clock, stream, control } = link();
    const ping = control.ping(1_000);
    control.close(Object.assign(new Error('gone'), { code: 'ERR_SMUX_SESSION_CLOSED' }) as never);
    expect(await rejection(ping)).toMatchObject({ code: 'ERR_SMUX_SESSION_CLOSED' });
    expect(await rejection(control.ping(1_000))).toMatchObject({ code: 'ERR_SMUX_SESSION_CLOSED' });
    expect(clock.pending).toBe(0);
    const other = link();
    other.stream.open = false;
    expect(await rejection(other.control.ping(1_000))).toMatchObject({ code: 'ERR_SMUX_UNAVAILABLE' });
    expect(other.control.drain('x')).toBe(false);
    void stream;
  });
});
