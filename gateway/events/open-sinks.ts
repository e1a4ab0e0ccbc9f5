import { join } from 'node:path';
import type { Logger } from 'pino';
import type { EventsTarget } from '../../shared/config.js';
import { LogEventSink, type EventSink } from './event-sink.js';
import { EventBridgeSink } from './eventbridge-sink.js';
import { createEventBridgeClient } from './put-events.js';

/** Starts with a dot, which no volume name does, so it can never collide with a volume's journal directory. */
export const EVENTS_SPILL_FILE = '.events-spill.jsonl';

/** The settings the sinks are made from (a ResolvedConfig has them). */
export interface EventSinksConfig {
  readonly events: EventsTarget;
  readonly eventsEndpoint?: string | undefined;
  readonly eventsSpill: boolean;
  /** Where the spill file lives. */
  readonly journalRoot: string;
}

/**
 * The sinks the configuration asks for. The log always gets every event: it is the record an
 * operator reads first, and it still has the events when EventBridge does not.
 */
export async function openEventSinks(config: EventSinksConfig, logger: Logger): Promise<EventSink[]> {
  const log = logger.child({ component: 'events' });
  const sinks: EventSink[] = [new LogEventSink(log)];
  if (config.events.kind === 'eventbridge') {
    sinks.push(
      await EventBridgeSink.open({
        busName: config.events.bus,
        client: createEventBridgeClient({ endpoint: config.eventsEndpoint }),
        logger: log.child({ sink: 'eventbridge', bus: config.events.bus }),
        spillFile: config.eventsSpill ? join(config.journalRoot, EVENTS_SPILL_FILE) : undefined,
      }),
    );
  }
  return sinks;
}
