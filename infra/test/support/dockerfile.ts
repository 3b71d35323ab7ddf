import { readFileSync } from 'node:fs';
import path from 'node:path';

export interface DockerfileStage {
  name: string;
  /** Instructions in order, continuation lines joined, comments dropped. */
  instructions: string[];
}

/** The repository's Dockerfile as named stages (every FROM must say `AS name`). */
export function readDockerfile(root: string): { text: string; preamble: string[]; stages: DockerfileStage[] } {
  const text = readFileSync(path.join(root, 'Dockerfile'), 'utf8');
  const instructions = text
    .replace(/\\\n\s*/g, ' ')
    .split('\n')
    .map((line) => line.trim())
    .filter((line) => line && !line.startsWith('#'));
  const preamble: string[] = [];
  const stages: DockerfileStage[] = [];
  for (const instruction of instructions) {
    const from = /^FROM \S+ AS (\S+)$/.exec(instruction);
    if (from?.[1]) stages.push({ name: from[1], instructions: [instruction] });
    else if (stages.length === 0) preamble.push(instruction);
    else stages[stages.length - 1]?.instructions.push(instruction);
  }
  return { text, preamble, stages };
}

/** `.dockerignore` patterns of the form `**\/name/`, `**\/*.ext` and `**\/prefix*` as a path filter. */
export function dockerignoreFilter(root: string): (relativePath: string) => boolean {
  const patterns = readFileSync(path.join(root, '.dockerignore'), 'utf8')
    .split('\n')
    .map((line) => line.trim())
    .filter((line) => line.startsWith('**/'))
    .map((line) => line.slice(3).replace(/\/$/, ''));
  const matchers = patterns.map((pattern) => {
    const expression = new RegExp(`^${pattern.replace(/[.+^${}()|[\]\\]/g, '\\$&').replace(/\*/g, '[^/]*')}$`);
    return (segment: string) => expression.test(segment);
  });
  return (relativePath) => !relativePath.split(path.sep).some((segment) => matchers.some((matches) => matches(segment)));
}
