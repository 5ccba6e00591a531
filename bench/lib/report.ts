/** The shape of a bench run's results, and how they print as tables. */
import type { Summary } from './stats.js';

export interface Table {
  readonly title: string;
  readonly columns: readonly string[];
  readonly rows: readonly (readonly string[])[];
  /** Lines printed under the table. */
  readonly notes?: readonly string[];
}

/** One latency distribution, for the JSON and the chart. */
export interface Series {
  /** Chart panel it belongs to. */
  readonly panel: string;
  readonly label: string;
  readonly summary: Summary;
  /** Sorted, at most 1,000 evenly picked samples, in ms. */
  readonly samples: readonly number[];
  /** A vertical marker on the panel (a configured bound or a design target), in ms. */
  readonly marker?: { readonly at: number; readonly label: string };
}

export interface ScenarioResult {
  readonly name: string;
  readonly title: string;
  tables: Table[];
  notes: string[];
  series: Series[];
  /** Raw figures of the scenario (numbers, keyed by what they measure). */
  data: Record<string, unknown>;
  error?: string;
  durationMs?: number;
}

export function newResult(name: string, title: string): ScenarioResult {
  return { name, title, tables: [], notes: [], series: [], data: {} };
}

/** A Markdown table, padded so that it also reads well in a terminal. */
export function renderTable(t: Table): string {
  const widths = t.columns.map((c, i) =>
    Math.max(c.length, ...t.rows.map((r) => (r[i] ?? '').length)),
  );
  const line = (cells: readonly string[]) =>
    `| ${cells.map((c, i) => (c ?? '').padEnd(widths[i] ?? 0)).join(' | ')} |`;
  const out = [
    `**${t.title}**`,
    '',
    line(t.columns),
    `|${widths.map((w) => ` ${'-'.repeat(w)} `).join('|')}|`,
  ];
  for (const r of t.rows) out.push(line(t.columns.map((_, i) => r[i] ?? '')));
  if (t.notes?.length) {
    out.push('');
    for (const n of t.notes) out.push(`- ${n}`);
  }
  return out.join('\n');
}

export function renderScenario(s: ScenarioResult): string {
  const out = [`## ${s.title}`, ''];
  if (s.error) out.push(`error: ${s.error}`, '');
  for (const t of s.tables) out.push(renderTable(t), '');
  for (const n of s.notes) out.push(n, '');
  return out.join('\n');
}
