/** Types of scripts/debian-tools.mjs for the TypeScript that uses it. */
export declare const CEPH_TOOLS: Readonly<Record<string, string>>;
export declare function onPath(cmd: string): boolean;
export declare function missingPackages(tools: Readonly<Record<string, string>>): string[];
export declare function installPackages(packages: readonly string[], log: (line: string) => void): boolean;
