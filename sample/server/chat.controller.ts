import { Controller } from '@nestjs/common';
import { MessagePattern, Payload } from '@nestjs/microservices';
import type { SmuxStreamedPayload } from '../../lib/index.js';
import type { ChatMessage, ChatReply } from '../messages.js';

@Controller()
export class ChatController {
  /**
   * A bidirectional stream: `@Payload()` is the caller's stream of messages (an Observable that is also an
   * AsyncIterable) and each answer goes out as soon as it is yielded, while the caller is still sending. One
   * handler call serves the whole conversation, so it can keep state across messages (here, a word count).
   */
  @MessagePattern('chat.talk')
  async *talk(@Payload() messages: SmuxStreamedPayload<ChatMessage>): AsyncGenerator<ChatReply> {
    let words = 0;
    // `for await` takes one message at a time: the stream's window reopens only as messages are taken.
    for await (const message of messages) {
      words += message.text.split(/\s+/).filter(Boolean).length;
      yield { re: message.seq, text: `${answer(message.text)} (${words} words so far)` };
    }
  }
}

/** The bot's wit: a question gets an answer, anything else an acknowledgement. */
function answer(text: string): string {
  if (/^(hi|hello)\b/i.test(text)) return 'hello, ada';
  if (text.trim().endsWith('?')) return `good question: "${text}"`;
  return `noted: "${text}"`;
}
