import { type Clock, systemClock } from './clock.js';

/** A pause that its owner can end early (storage answered, the service is closing). */
export interface Sleep {
  /** Resolves when the time is up or `wake` was called, whichever comes first. */
  readonly done: Promise<void>;
  wake(): void;
}

export function sleep(ms: number, clock: Clock = systemClock): Sleep {
  let wake = (): void => undefined;
  const done = new Promise<void>((resolve) => {
    const timer = clock.setTimer(() => {
      resolve();
    }, ms);
    wake = () => {
      timer.cancel();
      resolve();
    };
  });
  return { done, wake };
}
