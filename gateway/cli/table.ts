import { elementAt } from '../../shared/checked.js';

/** Prints rows under a header, columns padded to the widest cell. */
export function printTable(header: string[], rows: string[][]): void {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => elementAt(r, i).length)));
  const line = (cells: string[]) =>
    cells
      .map((c, i) => c.padEnd(elementAt(widths, i)))
      .join('  ')
      .trimEnd();
  process.stdout.write(`${[line(header), ...rows.map(line)].join('\n')}\n`);
}
