// Type-checked with the old `node10` module resolution: the package's types must resolve there too
// (package.json "types" and "typesVersions"), not only through "exports".
import { ClientSmux, ServerSmux, SmuxRecordBuilder } from 'nestjs-smux';
import { Session, type SmuxConfig } from 'nestjs-smux/smux';

const config: Partial<SmuxConfig> = { version: 2 };
export const parts = [ClientSmux, ServerSmux, SmuxRecordBuilder, Session, config];
