import { Module } from '@nestjs/common';
import { ChatController } from './chat.controller.js';
import { FilesController } from './files.controller.js';
import { FramesController } from './frames.controller.js';
import { MathController } from './math.controller.js';

@Module({ controllers: [MathController, FilesController, ChatController, FramesController] })
export class AppModule {}
