// The API docs page: /openapi.json rendered as routes and schemas, nothing fetched from elsewhere.
import { h, fetchJSON } from "./lib/dom.js";
import { resolve } from "./lib/openapi.js";

function typeOf(schema) {
  if (schema.const !== undefined) return JSON.stringify(schema.const);
  if (schema.enum) return schema.enum.map((v) => JSON.stringify(v)).join(" | ");
  if (schema.anyOf || schema.oneOf) return (schema.anyOf || schema.oneOf).map((s) => s.$ref ? s.$ref.split("/").pop() : typeOf(s)).join(" | ");
  if (schema.$ref) return schema.$ref.split("/").pop();
  if (schema.type === "array") return `array of ${schema.items ? typeOf(schema.items) : "any"}`;
  return [].concat(schema.type || "any").join(" | ");
}

function schemaTree(document, schema, depth = 0, seen = new Set()) {
  const name = schema?.$ref;
  const resolved = resolve(document, schema || {});
  const properties = resolved.properties || {};
  if (depth > 3 || (name && seen.has(name)) || !Object.keys(properties).length) {
    return h("div", { class: "schema" }, h("span", { class: "type" }, typeOf(schema || {})));
  }
  const inner = new Set(seen);
  if (name) inner.add(name);
  const required = new Set(resolved.required || []);
  return h("div", { class: "schema" }, Object.entries(properties).map(([key, value]) => {
    const target = value.items?.$ref ? value.items : value.$ref ? value : (value.anyOf || []).find((s) => s.$ref);
    return h("div", {},
      h("span", { class: "name" }, key), " ",
      h("span", { class: "type" }, typeOf(value)),
      required.has(key) ? h("span", { class: "req" }, " required") : null,
      value.description ? h("span", { class: "type" }, ` — ${value.description}`) : null,
      target && depth < 2 ? schemaTree(document, target, depth + 1, inner) : null);
  }));
}

function operation(document, path, method, op) {
  const body = op.requestBody?.content?.["application/json"]?.schema;
  const responses = Object.entries(op.responses || {});
  return h("details", { class: "op", "data-path": path },
    h("summary", {}, h("span", { class: `method ${method}` }, method.toUpperCase()), h("span", { class: "path" }, path), h("span", { class: "summary" }, op.summary || "")),
    h("div", { class: "body" },
      body ? [h("h4", {}, "Request body (application/json)"), schemaTree(document, body)] : null,
      h("h4", {}, "Responses"),
      responses.map(([status, response]) => h("div", {},
        h("b", {}, status), " ", response.description || "", " ",
        h("span", { class: "type" }, Object.keys(response.content || {}).join(", ")),
        status === "200" && response.content?.["application/json"]?.schema ? schemaTree(document, response.content["application/json"].schema) : null))));
}

async function main() {
  const document_ = await fetchJSON("/openapi.json");
  document.getElementById("api-title").textContent = `${document_.info?.title || "API"} ${document_.info?.version || ""}`;
  const root = document.getElementById("docs");
  root.append(h("p", {}, document_.info?.description || ""));
  for (const [path, item] of Object.entries(document_.paths || {})) {
    for (const [method, op] of Object.entries(item)) root.append(operation(document_, path, method, op));
  }
  document.body.dataset.loaded = "true";
}

main().catch((error) => {
  document.getElementById("docs").append(h("p", { class: "status-bad" }, String(error)));
});
