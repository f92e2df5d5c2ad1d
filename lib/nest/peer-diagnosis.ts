/*
 * What a peer that does not speak this transport probably is, judged by the first bytes it sent: an error that
 * says "it answered like an HTTP server" is worth more than "frame version 72 does not match".
 */

/** What the first bytes a server sent say about it, or null when they mean nothing to us. */
export function describeServerBytes(bytes: Buffer): string | null {
  if (startsWith(bytes, 'HTTP/')) return `it answered like an HTTP server ("${firstLine(bytes)}")`;
  if ((bytes[0] === 0x15 || bytes[0] === 0x16) && bytes[1] === 0x03) {
    return 'it answered with TLS: the server uses TLS, so set the `tls` option of ClientSmux';
  }
  if (startsWith(bytes, 'SSH-')) return `it is an SSH server ("${firstLine(bytes)}")`;
  return null;
}

/** What the first bytes a client sent say about it, or null when they mean nothing to us. */
export function describeClientBytes(bytes: Buffer): string | null {
  if (bytes[0] === 0x16 && bytes[1] === 0x03) return 'a TLS handshake: the client uses TLS but this server has no `tls` option';
  if (/^(GET|POST|PUT|HEAD|DELETE|OPTIONS|PATCH|CONNECT|TRACE) /.test(bytes.subarray(0, 8).toString('latin1'))) {
    return `an HTTP request ("${firstLine(bytes)}")`;
  }
  if (startsWith(bytes, 'PRI * HTTP/2')) return 'an HTTP/2 connection preface';
  // Nest's TCP transport frames each packet as `<length>#<json>`.
  if (/^\d{1,10}#\{/.test(bytes.subarray(0, 14).toString('latin1'))) return "Nest's TCP transport (a ClientTCP): use ClientSmux";
  return null;
}

function startsWith(bytes: Buffer, text: string): boolean {
  return bytes.length >= text.length && bytes.toString('latin1', 0, text.length) === text;
}

function firstLine(bytes: Buffer): string {
  const text = bytes.subarray(0, 80).toString('latin1');
  const end = text.search(/[\r\n]/);
  return end === -1 ? text : text.slice(0, end);
}
