/**
 * Recognises disk image formats that are not raw by their magic numbers, so that `holdfast import`
 * refuses them instead of storing their container bytes as a disk. Only formats whose header sits
 * at the start are recognised: a fixed VHD (raw data with a footer) imports as raw, footer included.
 */

/** The first bytes of an image this module needs to decide: every header it reads lies within them. */
export const SNIFF_BYTES = 512;

/** A format by the name qemu-img's `-f` takes. */
export type ImageFormatName = 'qcow' | 'qcow2' | 'qed' | 'vmdk' | 'vhdx' | 'vpc' | 'vdi' | 'parallels';

export interface ImageFormat {
  readonly name: ImageFormatName;
  /** The disk size the image holds, when its header says so. */
  readonly virtualSize?: number;
}

const ascii = (head: Buffer, at: number, text: string): boolean =>
  head.length >= at + text.length && head.toString('latin1', at, at + text.length) === text;

function u64(head: Buffer, at: number, endian: 'BE' | 'LE'): number | undefined {
  if (head.length < at + 8) return undefined;
  const v = endian === 'BE' ? head.readBigUInt64BE(at) : head.readBigUInt64LE(at);
  return v <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(v) : undefined;
}

function withSize(name: ImageFormatName, size: number | undefined): ImageFormat {
  return size === undefined ? { name } : { name, virtualSize: size };
}

/** The format of an image starting with `head`, or undefined when it is none of these (raw). */
export function sniffImageFormat(head: Buffer): ImageFormat | undefined {
  // QEMU copy-on-write: "QFI\xfb", version (1 = qcow, 2 and 3 = qcow2), size at 24 (big-endian).
  if (head.length >= 8 && head.readUInt32BE(0) === 0x514649fb)
    return withSize(head.readUInt32BE(4) === 1 ? 'qcow' : 'qcow2', u64(head, 24, 'BE'));
  // QED: "QED\0", image size at 48 (little-endian).
  if (ascii(head, 0, 'QED\0')) return withSize('qed', u64(head, 48, 'LE'));
  // VMDK hosted sparse extent ("KDMV", capacity in sectors at 12), the ESX "COWD" one, or a descriptor file.
  if (ascii(head, 0, 'KDMV')) {
    const sectors = u64(head, 12, 'LE');
    return withSize('vmdk', sectors === undefined ? undefined : sectors * 512);
  }
  if (ascii(head, 0, 'COWD') || ascii(head, 0, '# Disk DescriptorFile')) return { name: 'vmdk' };
  if (ascii(head, 0, 'vhdxfile')) return { name: 'vhdx' };
  // Dynamic VHD: a copy of the footer at 0, "conectix", current size at 48 (big-endian).
  if (ascii(head, 0, 'conectix')) return withSize('vpc', u64(head, 48, 'BE'));
  // VirtualBox: signature 0xbeda107f at 64.
  if (head.length >= 68 && head.readUInt32LE(64) === 0xbeda107f) return { name: 'vdi' };
  if (ascii(head, 0, 'WithoutFreeSpace') || ascii(head, 0, 'WithouFreSpacExt')) return { name: 'parallels' };
  return undefined;
}

/**
 * What to run instead: qemu-img reads the format and writes the disk through NBD into a volume a
 * gateway serves (created first, at least the image's virtual size).
 */
export function convertHint(format: ImageFormat, file: string, volume: string, nbdAddress = '127.0.0.1:10809'): string {
  const size = format.virtualSize === undefined ? 'SIZE (qemu-img info shows its virtual size)' : String(format.virtualSize);
  return (
    `Convert it through a gateway instead: holdfast volume create ${volume} --size ${size}, serve it, then\n` +
    `  qemu-img convert -n -f ${format.name} -O raw ${shellWord(file)} nbd://${nbdAddress}/${volume}`
  );
}

function shellWord(text: string): string {
  return /^[\w./:@%+=,-]+$/.test(text) ? text : `'${text.replaceAll("'", "'\\''")}'`;
}
