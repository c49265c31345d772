// Readiness and the hooks the model defines.
import { h, pane } from "../lib/dom.js";

export const applies = () => true;

export function mount({ openapi }) {
  const hooks = openapi["x-kingpost"]?.hooks || [];
  const readiness = h("b", { "data-testid": "readiness" }, "…");
  const loaded = h("b", {}, "…");
  const element = pane(
    "Model",
    openapi.info?.version ? `kingpost ${openapi.info.version}` : "",
    h("div", { class: "facts" }, h("span", {}, "ready ", readiness), h("span", {}, "loaded ", loaded), h("span", {}, "routes ", h("b", {}, String(Object.keys(openapi.paths || {}).length)))),
    h("div", { class: "hooks", "data-testid": "hooks" }, h("span", { class: "facts" }, "hooks"), hooks.length ? hooks.map((name) => h("span", { class: "hook" }, name)) : h("span", {}, "none")),
  );
  const badge = document.getElementById("readiness");
  async function check() {
    let ready = false;
    try {
      ready = (await fetch("/v1/models/model")).ok;
      loaded.textContent = (await fetch("/v1/models/model/loaded")).ok ? "yes" : "no";
    } catch (error) {
      loaded.textContent = "?";
    }
    readiness.textContent = ready ? "yes" : "no";
    badge.textContent = ready ? "ready" : "not ready";
    badge.dataset.state = ready ? "ready" : "not-ready";
  }
  element.classList.add("wide");
  check();
  setInterval(check, 3000);
  return element;
}
