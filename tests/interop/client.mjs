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
  { includeDirs: [root], keepCase: true, longs: String, enums: String, defaults: true },
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

const seen = {};
const applied = await call(control, "ApplyDeployment", {
  spec: {
    name: "node_greeter",
    code: { import_path: "tests.apps.greeter:Greeter" },
    init_arguments: { encoding: "ENCODING_JSON", args: Buffer.from('["Hi"]') },
    num_replicas: 2,
  },
  wait: true,
});
seen.applied_state = applied.deployment.state;
const listed = await call(control, "ListDeployments", {});
seen.listed = listed.deployments.map((d) => [d.spec.name, d.replicas.length]);
const greeted = await call(data, "Call", {
  deployment: "node_greeter",
  method: "greet",
  args_json: Buffer.from('["Ada"]'),
  kwargs_json: Buffer.from('{"punctuation": "?"}'),
});
seen.result = JSON.parse(greeted.result_json.toString());
try {
  await call(data, "Call", { deployment: "no_such_deployment", method: "greet" });
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
