import { HoldfastError } from '../../shared/errors.js';

/** Something in the store is not what a Holdfast volume looks like (bad manifest, wrong extent size). */
export class VolumeCorruptError extends HoldfastError {}
