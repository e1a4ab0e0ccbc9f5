import { z } from 'zod';

/**
 * The events a gateway emits on every state change of a volume. One schema, used by the gateway
 * to build them and by the Lambda functions to validate what EventBridge delivers.
 */
export const ERROR_CLASSES = ['transient', 'denied', 'missing', 'no-space', 'io', 'invalid', 'corrupt'] as const;
export const ErrorClassSchema = z.enum(ERROR_CLASSES);
export type ErrorClass = z.infer<typeof ErrorClassSchema>;

export const JOURNAL_PRESSURE_LEVELS = ['normal', 'high', 'full'] as const;

const common = {
  /** Unique per event: the key for de-duplicating deliveries. */
  id: z.string().min(1),
  volume: z.string().min(1),
  /** The gateway instance (task) that raised the event. */
  gateway: z.string().min(1),
  /** Identifies one hang / timeout / outage episode; its set and clear events share it. */
  episode: z.string().min(1),
  time: z.iso.datetime(),
  held: z.object({ requests: z.number().int().nonnegative(), bytes: z.number().int().nonnegative() }),
  errorClass: ErrorClassSchema.nullable(),
  lastError: z.string().nullable(),
};

const condition = <K extends string>(kind: K) =>
  z.discriminatedUnion('set', [
    z.object({ kind: z.literal(kind), set: z.literal(true), ...common }),
    z.object({ kind: z.literal(kind), set: z.literal(false), durationMs: z.number().nonnegative(), ...common }),
  ]);

export const IoHangEventSchema = condition('io-hang');
export const IoHangTimeoutEventSchema = condition('io-hang-timeout');
export const StorageUnavailableEventSchema = condition('storage-unavailable');
export const JournalPressureEventSchema = z.object({
  kind: z.literal('journal-pressure'),
  level: z.enum(JOURNAL_PRESSURE_LEVELS),
  journalBytes: z.number().int().nonnegative(),
  journalLimitBytes: z.number().int().positive(),
  ...common,
});

/** Another gateway took the volume: this one stopped serving it (docs/volume-format-2.md, "Fencing"). */
export const VolumeDeposedEventSchema = z.object({
  kind: z.literal('volume-deposed'),
  /** The head's epoch this gateway held. */
  epoch: z.number().int().nonnegative(),
  reason: z.string(),
  ...common,
});

/** Who asked for an operator action through the admin API. */
export const RequestedBySchema = z.object({
  /** The admin client's address and port, as the gateway's socket saw them. */
  address: z.string().min(1),
  /** `sha256:` and the first 12 hex digits of the bearer token's hash; null when the API takes no token. */
  token: z.string().nullable(),
});

const failed = z.number().int().nonnegative();

/** An operator paused hang handling: `failed` held requests were answered with their error. */
export const VolumePausedEventSchema = z.object({ kind: z.literal('volume-paused'), requestedBy: RequestedBySchema, failed, ...common });
export const VolumeResumedEventSchema = z.object({ kind: z.literal('volume-resumed'), requestedBy: RequestedBySchema, ...common });
/** An operator failed the `failed` requests held at that moment, once. */
export const HeldReleasedEventSchema = z.object({ kind: z.literal('held-released'), requestedBy: RequestedBySchema, failed, ...common });
/** Stored data failed its check (errorClass `corrupt`, lastError says where); the request that met it failed at once. */
export const DataCorruptEventSchema = z.object({ kind: z.literal('data-corrupt'), ...common });

// Discriminated on kind (then on set), so that a bad event is reported by the field that is wrong
// ("volume: expected string") rather than as "no union member matched".
export const HoldfastEventSchema = z.discriminatedUnion('kind', [
  IoHangEventSchema,
  IoHangTimeoutEventSchema,
  StorageUnavailableEventSchema,
  JournalPressureEventSchema,
  VolumeDeposedEventSchema,
  VolumePausedEventSchema,
  VolumeResumedEventSchema,
  HeldReleasedEventSchema,
  DataCorruptEventSchema,
]);

export type IoHangEvent = z.infer<typeof IoHangEventSchema>;
export type IoHangTimeoutEvent = z.infer<typeof IoHangTimeoutEventSchema>;
export type StorageUnavailableEvent = z.infer<typeof StorageUnavailableEventSchema>;
export type JournalPressureEvent = z.infer<typeof JournalPressureEventSchema>;
export type VolumeDeposedEvent = z.infer<typeof VolumeDeposedEventSchema>;
export type DataCorruptEvent = z.infer<typeof DataCorruptEventSchema>;
export type RequestedBy = z.infer<typeof RequestedBySchema>;
export type HoldfastEvent = z.infer<typeof HoldfastEventSchema>;
export type HoldfastEventKind = HoldfastEvent['kind'];
export type JournalPressureLevel = (typeof JOURNAL_PRESSURE_LEVELS)[number];
