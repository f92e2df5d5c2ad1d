import { Cmd, UPD_PAYLOAD_SIZE } from './constants.js';

/**
 * Writes an 8-byte header at `offset`: version u8, cmd u8, length u16 LE, stream id u32 LE (Go `frame.go`).
 * Plain byte stores: this runs once per frame sent.
 */
export function writeHeader(buf: Buffer, offset: number, version: number, cmd: number, length: number, streamId: number): void {
  buf[offset] = version;
  buf[offset + 1] = cmd;
  buf[offset + 2] = length & 0xff;
  buf[offset + 3] = length >>> 8;
  buf[offset + 4] = streamId & 0xff;
  buf[offset + 5] = (streamId >>> 8) & 0xff;
  buf[offset + 6] = (streamId >>> 16) & 0xff;
  buf[offset + 7] = streamId >>> 24;
}

/**
 * Why a header is invalid for a session of `version`, or `null` when it is valid. The rules are Go's newest
 * (v1.5.57 `recvLoop`): the version must match; SYN, FIN and NOP carry no payload; UPD exists only in v2 and
 * carries exactly 8 bytes; other commands are unknown. Checked before any payload is buffered.
 */
export function headerError(version: number, cmd: number, length: number, sessionVersion: number): string | null {
  if (version !== sessionVersion) return `frame version ${version} does not match the session's version ${sessionVersion}`;
  switch (cmd) {
    case Cmd.PSH:
      return null;
    case Cmd.SYN:
    case Cmd.FIN:
    case Cmd.NOP:
      return length === 0 ? null : `${cmdName(cmd)} frame with a ${length}-byte payload`;
    case Cmd.UPD:
      if (sessionVersion !== 2) return 'UPD frame in a version 1 session';
      return length === UPD_PAYLOAD_SIZE ? null : `UPD frame with a ${length}-byte payload (must be ${UPD_PAYLOAD_SIZE})`;
    default:
      return `unknown command ${cmd}`;
  }
}

/** The name of a command byte, for messages. */
export function cmdName(cmd: number): string {
  switch (cmd) {
    case Cmd.SYN:
      return 'SYN';
    case Cmd.FIN:
      return 'FIN';
    case Cmd.PSH:
      return 'PSH';
    case Cmd.NOP:
      return 'NOP';
    case Cmd.UPD:
      return 'UPD';
    default:
      return `CMD(${cmd})`;
  }
}
