import { Inject, Injectable } from '@nestjs/common';
import type { ClientProxy } from '@nestjs/microservices';
import { lastValueFrom, tap, toArray } from 'rxjs';
import type { ChatMessage, ChatReply } from '../messages.js';
import { SAMPLE_SERVICE } from './sample-service.js';

/** What a conversation reports. */
export interface ChatTranscript {
  readonly sent: number;
  readonly replies: ChatReply[];
  /** Replies that arrived before the caller's stream of messages had ended. */
  readonly whileSending: number;
}

/** A conversation with `chat.talk` over one bidirectional stream. */
@Injectable()
export class ChatClient {
  constructor(@Inject(SAMPLE_SERVICE) private readonly client: ClientProxy) {}

  /**
   * Sends `lines` as a stream (an async generator passed to `client.send()`) and reports each message and each
   * answer through `print` as they happen. Each message waits for the answer to the one before — a conversation,
   * which only a bidirectional stream holds on one call — so every answer arrives while the caller is still
   * sending. The waiting is bounded by the call's timeout (ClientSmux `timeout`).
   */
  async talk(lines: readonly string[], print: (line: string) => void): Promise<ChatTranscript> {
    let answered: () => void = () => undefined;
    let sending = true;
    let whileSending = 0;
    async function* messages(): AsyncGenerator<ChatMessage> {
      try {
        for (const [i, text] of lines.entries()) {
          const replied = new Promise<void>((resolve) => (answered = resolve));
          print(`  ada → ${text}`);
          yield { seq: i + 1, text };
          await replied;
        }
      } finally {
        sending = false; // the source is done: the client ends the stream (END) after this
      }
    }
    const replies = await lastValueFrom(
      this.client.send<ChatReply, AsyncGenerator<ChatMessage>>('chat.talk', messages()).pipe(
        tap((reply) => {
          if (sending) whileSending++;
          print(`  bot ← #${reply.re}: ${reply.text}`);
          answered();
        }),
        toArray(),
      ),
    );
    return { sent: lines.length, replies, whileSending };
  }
}
