// The console's charts: one uPlot chart per chart of `GET /v1/history`,
// loaded whole once, then grown by the samples taken since the last one
// (the server keeps the hour; the page keeps at most as many samples as
// the server does). Each chart's element says how many samples it draws
// and the time of the last (`data-points`, `data-last`).

import uPlot from './vendor/uPlot.esm.js';
import { label, ofUnit } from './format.js';

const COLORS = ['#4f8cff', '#30c48d', '#f5a524', '#e5484d', '#b07cff', '#52a9ff', '#ff7ab6', '#9aa3b5'];
const HEIGHT = 170;
const AXIS = { stroke: '#9aa3b5', grid: { stroke: '#2a3142', width: 1 }, ticks: { stroke: '#2a3142', width: 1 } };

export class Charts {
  constructor(container) {
    this.container = container;
    this.capacity = 0;
    // Seconds since the epoch, shared by every chart as its x values.
    this.times = [];
    this.charts = [];
    // The raw value of every series at the last sample, by `chart/label`.
    this.totals = new Map();
    this.resize = new ResizeObserver(() => this.fit());
    this.resize.observe(container);
  }

  /** The unix milliseconds of the last sample drawn, if any. */
  lastTime() {
    return this.lastMs;
  }

  /** Whether the history has chart `id`. */
  has(id) {
    return this.charts.some((c) => c.id === id);
  }

  /** The newest charted value of series `label` of chart `id` (null: none). */
  latest(id, label) {
    const chart = this.charts.find((c) => c.id === id);
    const i = chart?.labels.indexOf(label) ?? -1;
    return i < 0 ? null : (chart.data[i + 1].at(-1) ?? null);
  }

  /** The raw value of series `label` of chart `id` at the last sample. */
  total(id, label) {
    return this.totals.get(`${id}/${label}`) ?? null;
  }

  keepTotals(view) {
    for (const chart of view.charts) {
      for (const s of chart.series) this.totals.set(`${chart.id}/${s.label}`, s.total);
    }
  }

  /** Draws `view` (a whole history) from scratch. */
  load(view) {
    for (const chart of this.charts) chart.plot.destroy();
    this.container.replaceChildren();
    this.charts = [];
    this.capacity = view.capacity;
    this.times = view.times.map((ms) => ms / 1000);
    this.lastMs = view.times.at(-1);
    for (const chart of view.charts) this.charts.push(this.make(chart));
    this.keepTotals(view);
    this.mark();
  }

  /** Adds the samples of `view` (taken after the last one drawn). */
  append(view) {
    if (view.times.length === 0) return;
    const known = new Set(view.charts.map((c) => c.id));
    if (known.size !== this.charts.length || this.charts.some((c) => !known.has(c.id))) {
      return this.load(view);
    }
    this.times.push(...view.times.map((ms) => ms / 1000));
    const drop = Math.max(0, this.times.length - this.capacity);
    this.times.splice(0, drop);
    for (const incoming of view.charts) {
      const chart = this.charts.find((c) => c.id === incoming.id);
      incoming.series.forEach((series, i) => {
        const values = chart.data[i + 1];
        values.push(...series.values);
        values.splice(0, drop);
      });
      chart.plot.setData(chart.data);
    }
    this.lastMs = view.times.at(-1);
    this.keepTotals(view);
    this.mark();
  }

  make(chart) {
    const figure = document.createElement('figure');
    figure.className = 'chart';
    figure.dataset.chart = chart.id;
    const caption = document.createElement('figcaption');
    caption.textContent = chart.title;
    const plotArea = document.createElement('div');
    plotArea.className = 'chart-plot';
    figure.append(caption, plotArea);
    this.container.append(figure);
    const unit = chart.unit;
    const options = {
      width: this.width(plotArea),
      height: HEIGHT,
      cursor: { drag: { x: false, y: false } },
      legend: { live: true },
      scales: { x: { time: true }, y: { range: (u, min, max) => [0, Math.max(1, max * 1.1)] } },
      axes: [
        { ...AXIS },
        { ...AXIS, size: 84, values: (u, splits) => splits.map((v) => ofUnit(v, unit)) },
      ],
      series: [
        {},
        ...chart.series.map((s, i) => ({
          label: label(s.label),
          stroke: COLORS[i % COLORS.length],
          width: 1.5,
          points: { show: false },
          spanGaps: false,
          value: (u, v) => ofUnit(v, unit),
        })),
      ],
    };
    const data = [this.times, ...chart.series.map((s) => [...s.values])];
    const plot = new uPlot(options, data, plotArea);
    return { id: chart.id, labels: chart.series.map((s) => s.label), figure, plotArea, plot, data };
  }

  width(element) {
    return Math.max(240, Math.floor(element.clientWidth || this.container.clientWidth / 2 - 24));
  }

  fit() {
    for (const chart of this.charts) {
      chart.plot.setSize({ width: this.width(chart.plotArea), height: HEIGHT });
    }
  }

  mark() {
    for (const chart of this.charts) {
      chart.figure.dataset.points = String(this.times.length);
      chart.figure.dataset.last = String(this.lastMs ?? '');
    }
  }
}
