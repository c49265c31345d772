// Reading the server's own OpenAPI document: which routes exist, example bodies.
export function resolve(document, schema) {
  let seen = 0;
  while (schema && schema.$ref && seen++ < 32) {
    const path = schema.$ref.replace(/^#\//, "").split("/");
    schema = path.reduce((node, key) => (node ? node[key] : undefined), document);
  }
  return schema || {};
}

export function requestSchema(document, path) {
  const operation = document.paths?.[path]?.post;
  const schema = operation?.requestBody?.content?.["application/json"]?.schema;
  return schema ? resolve(document, schema) : null;
}

// A small body that fits the schema, for the predict form to start from.
export function example(document, schema, depth = 0) {
  schema = resolve(document, schema);
  if (depth > 4 || !schema) return null;
  if ("default" in schema) return schema.default;
  if ("const" in schema) return schema.const;
  if (schema.examples?.length) return schema.examples[0];
  if (schema.enum?.length) return schema.enum[0];
  const options = schema.anyOf || schema.oneOf;
  if (options) return example(document, options.find((o) => resolve(document, o).type !== "null") || options[0], depth + 1);
  switch (Array.isArray(schema.type) ? schema.type[0] : schema.type) {
    case "object": {
      const result = {};
      for (const name of schema.required || Object.keys(schema.properties || {})) {
        result[name] = example(document, schema.properties?.[name] || {}, depth + 1);
      }
      return result;
    }
    case "array": return [example(document, schema.items || {}, depth + 1)];
    case "string": return "hello";
    case "integer": return schema.minimum ?? 1;
    case "number": return schema.minimum ?? 1.0;
    case "boolean": return true;
    default: return {};
  }
}
