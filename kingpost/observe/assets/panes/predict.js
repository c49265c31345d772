// A predict form: JSON in, the result out, with status, latency and request id.
import { h, pane } from "../lib/dom.js";
import { example, requestSchema } from "../lib/openapi.js";

export const applies = ({ openapi }) => Boolean(openapi.paths?.["/predict"]);

export function curlCommand(url, body) {
  const quoted = body.replace(/'/g, "'\\''");
  return `curl -sS -X POST '${url}' -H 'Content-Type: application/json' -d '${quoted}'`;
}

export function mount({ openapi }) {
  const schema = requestSchema(openapi, "/predict");
  const start = schema && Object.keys(schema).length ? example(openapi, schema) : { text: "hello" };
  const input = h("textarea", { "data-testid": "predict-input", spellcheck: "false" });
  input.value = JSON.stringify(start, null, 2);
  const statusOut = h("b", { "data-testid": "predict-status" }, "–");
  const latencyOut = h("b", { "data-testid": "predict-latency" }, "–");
  const idOut = h("b", { "data-testid": "predict-request-id" }, "–");
  const output = h("pre", { class: "out", "data-testid": "predict-output" }, "");
  const curlOut = h("pre", { class: "out", "data-testid": "predict-curl", hidden: true }, "");
  const send = h("button", { "data-testid": "predict-send", onclick: run }, "Send");
  const copy = h("button", { class: "secondary", "data-testid": "predict-copy-curl", onclick: copyCurl }, "Copy as curl");

  async function run() {
    let body;
    try {
      body = JSON.stringify(JSON.parse(input.value));
    } catch (error) {
      statusOut.textContent = "invalid JSON";
      statusOut.className = "status-bad";
      output.textContent = String(error);
      return;
    }
    send.disabled = true;
    const started = performance.now();
    try {
      const response = await fetch("/predict", { method: "POST", headers: { "content-type": "application/json" }, body });
      const text = await response.text();
      latencyOut.textContent = `${(performance.now() - started).toFixed(1)} ms`;
      statusOut.textContent = String(response.status);
      statusOut.className = response.ok ? "status-ok" : "status-bad";
      idOut.textContent = response.headers.get("x-request-id") || "–";
      try {
        output.textContent = JSON.stringify(JSON.parse(text), null, 2);
      } catch {
        output.textContent = text;
      }
    } catch (error) {
      statusOut.textContent = "failed";
      statusOut.className = "status-bad";
      output.textContent = String(error);
    } finally {
      send.disabled = false;
    }
  }

  async function copyCurl() {
    let body = input.value;
    try {
      body = JSON.stringify(JSON.parse(body));
    } catch {}
    const command = curlCommand(new URL("/predict", location.href).href, body);
    curlOut.textContent = command;
    curlOut.hidden = false;
    try {
      await navigator.clipboard.writeText(command);
      copy.textContent = "Copied";
    } catch {
      copy.textContent = "Copy the command below";
    }
    setTimeout(() => (copy.textContent = "Copy as curl"), 1500);
  }

  return pane(
    "Predict",
    "POST /predict",
    input,
    h("div", { class: "row" }, send, copy),
    h("div", { class: "facts" }, h("span", {}, "status ", statusOut), h("span", {}, "latency ", latencyOut), h("span", {}, "request id ", idOut)),
    output,
    curlOut,
  );
}
