// The playground: panes mounted from /playground/config.json and /openapi.json.
import { h, fetchJSON } from "./lib/dom.js";
import * as status from "./panes/status.js";
import * as predict from "./panes/predict.js";
import * as chat from "./panes/chat.js";
import * as metrics from "./panes/metrics.js";

const BUILT_IN = { status, predict, chat, metrics };

async function main() {
  const config = await fetchJSON("/playground/config.json");
  const document_ = await fetchJSON(config.openapi);
  let modelName = document_.info?.title || "model";
  try {
    const models = await fetchJSON("/v1/models");
    modelName = models.data?.[0]?.id || modelName;
  } catch (error) {
    console.warn("no /v1/models", error);
  }
  window.document.getElementById("model-name").textContent = modelName;
  const context = { config, openapi: document_, modelName, h, fetchJSON };
  const panes = window.document.getElementById("panes");
  for (const name of config.panes) {
    const module = BUILT_IN[name];
    if (module && module.applies(context)) panes.append(module.mount(context));
  }
  // Panes from other parts of Kingpost (the platform's admin, for one).
  const builtIn = panes.firstChild; // `first` extensions go above it, in their order
  for (const extension of config.extensions || []) {
    const element = h("section", { class: "pane wide", "data-extension": extension.title }, h("h2", {}, extension.title));
    panes.insertBefore(element, extension.first ? builtIn : null);
    try {
      const module = await import(extension.module);
      await module.mount(element, { ...context, api: extension.api });
    } catch (error) {
      element.append(h("p", { class: "status-bad" }, `could not load ${extension.module}: ${error}`));
    }
  }
  window.document.body.dataset.loaded = "true";
}

main().catch((error) => {
  window.document.getElementById("panes").append(h("p", { class: "status-bad" }, String(error)));
  window.document.body.dataset.loaded = "error";
});
