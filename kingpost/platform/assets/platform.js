// The platform pane of the playground: models, environments and deployments from the
// admin API, their replica counts, and a button that promotes a deployment.
const REFRESH_MS = 2000;

export async function mount(element, { api, h, fetchJSON }) {
  const environments = h("tbody", { "data-testid": "platform-environments" });
  const deployments = h("tbody", { "data-testid": "platform-deployments" });
  const result = h("span", { class: "facts", "data-testid": "promote-result" }, "");
  const summary = h("div", { class: "facts", "data-testid": "platform-summary" }, "…");
  const head = (...names) => h("thead", {}, h("tr", {}, names.map((name) => h("th", {}, name))));
  element.append(
    summary,
    h("h3", {}, "Environments"),
    h("table", { class: "grid" }, head("model", "environment", "deployment", "replicas", "in flight", "parked", "promotion"), environments),
    h("h3", {}, "Deployments"),
    h("table", { class: "grid" }, head("deployment", "model", "status", "serving", "replicas", "promote"), deployments),
    h("div", { class: "row" }, result),
  );
  let byModel = {};

  function badge(text, state) {
    const element_ = document.getElementById("readiness");
    if (!element_) return;
    element_.textContent = text;
    element_.dataset.state = state;
  }

  let pending = null; // the promotion asked for here, until the environment serves it

  async function promote(id, environment, button) {
    button.disabled = true;
    result.textContent = `promoting ${id} to ${environment}…`;
    try {
      const response = await fetch(`${api}/deployments/${encodeURIComponent(id)}/promote`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ environment }),
      });
      const body = await response.json();
      result.textContent = response.ok ? `promotion of ${id} to ${environment}: ${body.state || body.status || "started"}` : `${response.status}: ${body.error}`;
      result.dataset.status = String(response.status);
      if (response.ok) pending = { id, environment };
    } catch (error) {
      result.textContent = String(error);
    } finally {
      button.disabled = false;
      refresh();
    }
  }

  function environmentRow(env) {
    const replicas = env.replicas || { replicas: 0, ready: 0, in_flight: 0, parked: 0 };
    const run = env.promotion;
    return h(
      "tr",
      { "data-model": env.model, "data-environment": env.name },
      h("td", {}, env.model),
      h("td", {}, env.name),
      h("td", { class: "mono", "data-testid": "env-deployment" }, env.deployment_id || "–"),
      h("td", { class: "mono", "data-testid": "env-replicas" }, `${replicas.ready}/${replicas.replicas}`),
      h("td", { class: "mono" }, String(replicas.in_flight)),
      h("td", { class: "mono" }, String(replicas.parked)),
      h("td", {}, run ? `${run.deployment_id || ""} ${run.state || ""}`.trim() : "–"),
    );
  }

  function deploymentRow(deployment) {
    // The environments it could be promoted to: those of its model it does not serve yet.
    const names = (byModel[deployment.model] || []).map((env) => env.name).filter((name) => !deployment.environments.includes(name));
    const choice = h("select", { "data-testid": "promote-env", hidden: !names.length }, names.map((name) => h("option", { value: name }, name)));
    const button = h("button", { "data-testid": "promote", onclick: () => promote(deployment.id, choice.value, button) }, "Promote");
    button.disabled = !deployment.active || !names.length;
    return h(
      "tr",
      { "data-deployment": deployment.id },
      h("td", { class: "mono" }, deployment.id),
      h("td", {}, deployment.model),
      h("td", { "data-testid": "deployment-status" }, deployment.status),
      h("td", { "data-testid": "deployment-environments" }, deployment.environments.join(", ") || "–"),
      h("td", { class: "mono", "data-testid": "deployment-replicas" }, `${deployment.ready}/${deployment.replicas}`),
      h("td", {}, h("span", { class: "row" }, choice, button)),
    );
  }

  async function refresh() {
    try {
      const models = await fetchJSON(`${api}/models`);
      const found = {};
      for (const model of models) {
        found[model.name] = await fetchJSON(`${api}/models/${encodeURIComponent(model.name)}/environments`);
      }
      const listed = await fetchJSON(`${api}/deployments`);
      byModel = found;
      const served = pending && Object.values(found).flat().find((env) => env.name === pending.environment && env.deployment_id === pending.id && !env.promotion);
      if (served) {
        result.textContent = `${pending.id} serves ${pending.environment}`;
        pending = null;
      }
      environments.replaceChildren(...Object.values(found).flat().map(environmentRow));
      // A menu being used is not rebuilt under the pointer.
      if (!deployments.contains(document.activeElement)) deployments.replaceChildren(...listed.map(deploymentRow));
      const replicas = listed.reduce((sum, d) => sum + d.replicas, 0);
      const ready = listed.reduce((sum, d) => sum + d.ready, 0);
      summary.textContent = `${models.length} models · ${listed.length} deployments · ${replicas} replicas`;
      badge(`${ready}/${replicas} replicas ready`, "ready");
      element.dataset.refreshed = String(Number(element.dataset.refreshed || 0) + 1);
    } catch (error) {
      summary.textContent = `the admin API did not answer: ${error}`;
      badge("admin API down", "not-ready");
    }
  }
  await refresh();
  setInterval(refresh, REFRESH_MS);
}
