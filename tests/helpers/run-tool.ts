import { spawn } from 'node:child_process';

export interface ToolResult {
  readonly code: number | null;
  readonly stdout: string;
  readonly stderr: string;
}

/**
 * Runs a command to its end, with `input` on its stdin if given; a command that cannot be started
 * reports code null and why in stderr.
 */
export function runTool(cmd: string, args: readonly string[], opts: { input?: string } = {}): Promise<ToolResult> {
  const child = spawn(cmd, args, { stdio: [opts.input === undefined ? 'ignore' : 'pipe', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout?.setEncoding('utf8').on('data', (chunk: string) => (stdout += chunk));
  child.stderr?.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
  if (opts.input !== undefined) {
    child.stdin?.on('error', () => undefined);
    child.stdin?.end(opts.input);
  }
  return new Promise((resolve) => {
    child.once('error', (err) => {
      resolve({ code: null, stdout, stderr: err.message });
    });
    child.once('close', (code) => {
      resolve({ code, stdout, stderr });
    });
  });
}

/** Runs a command that must succeed; the assertion message carries its output. */
export async function runToolOk(cmd: string, args: readonly string[]): Promise<ToolResult> {
  const r = await runTool(cmd, args);
  if (r.code !== 0) throw new Error(`${cmd} ${args.join(' ')} exited with ${r.code}\nstdout:\n${r.stdout}\nstderr:\n${r.stderr}`);
  return r;
}
