// Live charts of request rate, latency and tokens/s, from successive /metrics scrapes.
import { h, pane } from "../lib/dom.js";
import { LineChart } from "../lib/chart.js";
import { parseMetrics, total } from "../lib/prometheus.js";

// The server's own routes (and this page's scrapes) are not traffic.
const QUIET = new Set(["metrics", "liveness", "readiness", "loaded", "models", "openapi", "docs", "playground", "schema", "unknown"]);
const traffic = (labels) => !QUIET.has(labels.route);

export const applies = () => true;

function chart(testid, title, unit, color) {
  const canvas = h("canvas", { "data-testid": testid, "data-points": "0" });
  const value = h("b", {}, "–");
  return { canvas, value, unit, chart: new LineChart(canvas, { color }), element: h("figure", { class: "chart" }, h("figcaption", {}, title, value), canvas) };
}

export function mount({ config }) {
  const rate = chart("chart-rate", "requests / s", "/s", "#2a62d8");
  const latency = chart("chart-latency", "mean latency", "ms", "#b0501a");
  const tokens = chart("chart-tokens", "tokens / s", "/s", "#17845a");
  const element = pane("Metrics", `${config.metrics}, every second`, h("div", { class: "charts" }, rate.element, latency.element, tokens.element));
  element.classList.add("wide");
  let previous = null;

  async function scrape() {
    let samples;
    try {
      samples = parseMetrics(await (await fetch(config.metrics)).text());
    } catch (error) {
      return;
    }
    const now = {
      at: performance.now() / 1000,
      requests: total(samples, "kingpost_requests_total", traffic),
      latencySum: total(samples, "kingpost_request_duration_seconds_sum", traffic),
      latencyCount: total(samples, "kingpost_request_duration_seconds_count", traffic),
      tokens: total(samples, "kingpost_generation_tokens_total"),
    };
    if (previous) {
      const seconds = Math.max(now.at - previous.at, 1e-3);
      const answered = now.latencyCount - previous.latencyCount;
      const values = [
        [rate, (now.requests - previous.requests) / seconds, 2],
        [latency, answered > 0 ? ((now.latencySum - previous.latencySum) / answered) * 1000 : 0, 1],
        [tokens, (now.tokens - previous.tokens) / seconds, 1],
      ];
      for (const [item, value, digits] of values) {
        item.chart.push(value);
        item.value.textContent = `${value.toFixed(digits)} ${item.unit}`;
      }
    }
    previous = now;
  }
  scrape();
  setInterval(scrape, 1000);
  return element;
}
