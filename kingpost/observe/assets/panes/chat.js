// A chat pane streaming from /v1/chat/completions or /v1/messages; Stop disconnects.
import { h, pane } from "../lib/dom.js";
import { readEvents } from "../lib/sse.js";

const APIS = {
  "/v1/chat/completions": {
    label: "OpenAI chat completions",
    body: (model, messages, maxTokens) => ({ model, messages, max_tokens: maxTokens, stream: true }),
    text(event) {
      if (event.data === "[DONE]") return { done: true };
      const chunk = JSON.parse(event.data);
      if (chunk.error) throw new Error(chunk.error.message);
      return { text: chunk.choices?.[0]?.delta?.content || "" };
    },
  },
  "/v1/messages": {
    label: "Anthropic messages",
    body: (model, messages, maxTokens) => ({ model, messages, max_tokens: maxTokens, stream: true }),
    text(event) {
      const data = JSON.parse(event.data);
      if (data.type === "error") throw new Error(data.error?.message || "error");
      if (data.type === "message_stop") return { done: true };
      return { text: data.type === "content_block_delta" ? data.delta?.text || "" : "" };
    },
  },
};

export const applies = ({ openapi }) => Object.keys(APIS).some((path) => openapi.paths?.[path]);

export function mount({ openapi, modelName }) {
  const paths = Object.keys(APIS).filter((path) => openapi.paths?.[path]);
  const api = h("select", { "data-testid": "chat-api" }, paths.map((path) => h("option", { value: path }, `${APIS[path].label} (${path})`)));
  const maxTokens = h("input", { type: "number", value: "64", min: "1", "data-testid": "chat-max-tokens", style: "width: 90px" });
  const transcript = h("div", { class: "transcript", "data-testid": "chat-transcript" });
  const input = h("textarea", { "data-testid": "chat-input", placeholder: "Say something", style: "min-height: 60px" });
  const send = h("button", { "data-testid": "chat-send", onclick: run }, "Send");
  const stop = h("button", { class: "danger", "data-testid": "chat-stop", disabled: true, onclick: () => controller?.abort() }, "Stop");
  const clear = h("button", { class: "secondary", onclick: () => { history = []; transcript.replaceChildren(); } }, "Clear");
  const state = h("b", { "data-testid": "chat-state" }, "idle");
  const ttftOut = h("b", { "data-testid": "chat-ttft" }, "–");
  const rateOut = h("b", { "data-testid": "chat-rate" }, "–");
  let controller = null;
  let history = [];

  function turn(role, text) {
    const body = h("span", { class: "text" }, text);
    transcript.append(h("div", { class: `turn ${role}`, "data-role": role }, h("span", { class: "who" }, role), body));
    transcript.scrollTop = transcript.scrollHeight;
    return body;
  }

  async function run() {
    const content = input.value.trim();
    if (!content || controller) return;
    const path = api.value;
    history.push({ role: "user", content });
    turn("user", content);
    input.value = "";
    const reply = turn("assistant", "");
    reply.dataset.testid = "chat-reply";
    controller = new AbortController();
    send.disabled = true;
    stop.disabled = false;
    state.textContent = "streaming";
    const started = performance.now();
    let first = null;
    let pieces = 0;
    try {
      const response = await fetch(path, {
        method: "POST",
        headers: { "content-type": "application/json", "anthropic-version": "2023-06-01" },
        body: JSON.stringify(APIS[path].body(modelName, history, Number(maxTokens.value) || 64)),
        signal: controller.signal,
      });
      if (!response.ok) throw new Error(`${response.status}: ${await response.text()}`);
      for await (const event of readEvents(response)) {
        const { text, done } = APIS[path].text(event);
        if (done) break;
        if (!text) continue;
        if (first === null) {
          first = performance.now();
          ttftOut.textContent = `${(first - started).toFixed(0)} ms`;
        }
        pieces += 1;
        reply.textContent += text;
        reply.dataset.pieces = String(pieces);
        const seconds = (performance.now() - first) / 1000;
        if (seconds > 0) rateOut.textContent = `${(pieces / seconds).toFixed(1)} /s`;
        transcript.scrollTop = transcript.scrollHeight;
      }
      state.textContent = "done";
      history.push({ role: "assistant", content: reply.textContent });
    } catch (error) {
      if (error.name === "AbortError") {
        state.textContent = "stopped";
        history.push({ role: "assistant", content: reply.textContent });
      } else {
        state.textContent = "failed";
        reply.textContent += `\n[${error.message}]`;
      }
    } finally {
      controller = null;
      send.disabled = false;
      stop.disabled = true;
    }
  }

  input.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey) {
      event.preventDefault();
      run();
    }
  });
  return pane(
    "Chat",
    "streams; Stop closes the connection",
    h("div", { class: "row" }, api, h("label", {}, "max tokens "), maxTokens),
    transcript,
    input,
    h("div", { class: "row" }, send, stop, clear),
    h("div", { class: "facts" }, h("span", {}, "state ", state), h("span", {}, "first token ", ttftOut), h("span", {}, "pieces ", rateOut)),
  );
}
