// A Capstan client in Node, generated at run time from protos/ with
// @grpc/proto-loader: applies a deployment given by import path through the
// ControlPlane, lists it, calls it through the DataPlane, checks an error
// code, deletes it. Prints one JSON object with what it saw.
import path from "node:path";
import { fileURLToPath } from "node:url";
import grpc from "@grpc/grpc-js";
import protoLoader from "@grpc/proto-loader";

const [controlPlane, dataPlane] = process.argv.slice(2);
const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../../protos");
const definition = protoLoader.loadSync(
  ["capstan/v1/controlplane.proto", "capstan/v1/dataplane.proto"],
  { includeDirs: [root], keepCase: true, longs: String, enums: String, defaults: true, oneofs: true },
);
const v1 = grpc.loadPackageDefinition(definition).capstan.v1;
const credentials = grpc.credentials.createInsecure();
const control = new v1.ControlPlaneService(controlPlane, credentials);
const data = new v1.DataPlaneService(dataPlane, credentials);

const call = (client, method, request) =>
  new Promise((resolve, reject) =>
    client[method](request, { deadline: Date.now() + 60_000 }, (error, reply) =>
      error ? reject(error) : resolve(reply),
    ),
  );

// google.protobuf.Value as proto-loader hands it over (a oneof `kind`),
// to and from plain JSON values.
const toValue = (x) => {
  if (x === null) return { null_value: "NULL_VALUE" };
  if (Array.isArray(x)) return { list_value: { values: x.map(toValue) } };
  if (typeof x === "object") return { struct_value: toStruct(x) };
  if (typeof x === "number") return { number_value: x };
  if (typeof x === "boolean") return { bool_value: x };
  return { string_value: String(x) };
};
const toStruct = (o) => ({
  fields: Object.fromEntries(Object.entries(o).map(([k, v]) => [k, toValue(v)])),
});
const fromValue = (v) => {
  switch (v.kind) {
    case "list_value":
      return (v.list_value.values || []).map(fromValue);
    case "struct_value":
      return Object.fromEntries(
        Object.entries(v.struct_value.fields || {}).map(([k, x]) => [k, fromValue(x)]),
      );
    case "null_value":
    case undefined:
      return null;
    default:
      return v[v.kind];
  }
};

const seen = {};
const applied = await call(control, "ApplyDeployment", {
  spec: {
    name: "node_greeter",
    code: { import_path: "tests.apps.greeter:Greeter" },
    init_arguments: { args: toValue(["Hi"]).list_value },
    num_replicas: 2,
  },
  wait: true,
});
seen.applied_state = applied.deployment.state;
const listed = await call(control, "ListDeployments", {});
seen.listed = listed.deployments.map((d) => [d.spec.name, d.replicas.length]);
const stored = await call(control, "GetDeployment", { name: "node_greeter" });
seen.init_args = fromValue({ kind: "list_value", list_value: stored.spec.init_arguments.args });
const greeted = await call(data, "Call", {
  deployment: "node_greeter",
  method_name: "greet",
  arguments: { args: toValue(["Ada"]).list_value, kwargs: toStruct({ punctuation: "?" }) },
});
seen.result = fromValue(greeted.result);
try {
  await call(data, "Call", { deployment: "no_such_deployment", method_name: "greet" });
} catch (error) {
  seen.unknown = [grpc.status[error.code], error.details];
}
try {
  await call(control, "ApplyDeployment", { spec: { name: "bad name" } });
} catch (error) {
  seen.invalid = [grpc.status[error.code], error.details];
}
await call(control, "DeleteDeployment", { name: "node_greeter", wait: true });
seen.after_delete = (await call(control, "ListDeployments", {})).deployments.map((d) => d.spec.name);
console.log(JSON.stringify(seen));
control.close();
data.close();
