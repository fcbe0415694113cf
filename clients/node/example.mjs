// Capstan from Node, with no Python on this side: writes a folder of Python
// code, packs and uploads it, deploys it, calls it through the DataPlane and
// over HTTP, scales it, reads a structured error, and deletes it. Prints one
// JSON object with what it saw (tests/clients/test_node_client.py reads it).
//
//   node example.mjs CONTROL_PLANE_ADDRESS DATA_PLANE_ADDRESS HTTP_URL
//   node example.mjs 127.0.0.1:8765 127.0.0.1:9000 http://127.0.0.1:8000
import { createHash } from "node:crypto";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { fromJson, toJson } from "@bufbuild/protobuf";
import { ListValueSchema, ValueSchema } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { create as createTar } from "tar";
import { ControlPlaneService, ReplicaState } from "./gen/capstan/v1/controlplane_pb.js";
import {
  CallRequestSchema,
  CallStreamRequestSchema,
  DataPlaneService,
} from "./gen/capstan/v1/dataplane_pb.js";
import { PackageFormat, PackageService } from "./gen/capstan/v1/packages_pb.js";
import { BadRequestSchema, ErrorInfoSchema } from "./vendor/google/rpc/error_details_pb.js";

const GREETER_PY = `
class Greeter:
    def __init__(self, greeting="Hello"):
        self.greeting = greeting

    def greet(self, name, punct="!"):
        return f"{self.greeting}, {name}{punct}"

    def spell(self, name):
        yield from name

    async def __call__(self, request):
        return {"greeting": self.greet(request.query_params.get("name", "world"))}
`;
const NAME = "node_greeter";
// At most 1 MiB per upload message, as PackageService advises.
const CHUNK_BYTES = 1 << 20;

const [controlPlane, dataPlane, httpUrl] = process.argv.slice(2);
if (!httpUrl) {
  console.error("usage: node example.mjs CONTROL_PLANE_ADDRESS DATA_PLANE_ADDRESS HTTP_URL");
  process.exit(2);
}
// One transport (one HTTP/2 connection) per server, shared by its services.
const controlTransport = createGrpcTransport({ baseUrl: `http://${controlPlane}` });
const control = createClient(ControlPlaneService, controlTransport);
const packages = createClient(PackageService, controlTransport);
const dataTransport = createGrpcTransport({ baseUrl: `http://${dataPlane}` });
const data = createClient(DataPlaneService, dataTransport);
// Applies and scales wait for replicas to start: allow them a minute.
const slow = { timeoutMs: 60_000 };

/**
 * The folder as a gzipped tar: the format Python's tarfile unpacks on the
 * replica's node. Fixed mtimes and no owners make the same folder the same
 * bytes, so the same sha256 and one stored package.
 * @param {string} folder
 */
async function pack(folder) {
  const chunks = [];
  const archive = createTar({ gzip: true, cwd: folder, portable: true, mtime: new Date(0) }, ["."]);
  for await (const chunk of archive) chunks.push(chunk);
  return Buffer.concat(chunks);
}

/**
 * Uploads an archive: its metadata first, then its bytes in chunks.
 * @param {Buffer} archive
 */
async function upload(archive) {
  const sha256 = createHash("sha256").update(archive).digest("hex");
  async function* requests() {
    const metadata = { sha256, sizeBytes: BigInt(archive.length), format: PackageFormat.TAR_GZ };
    yield { part: { case: /** @type {const} */ ("metadata"), value: metadata } };
    for (let start = 0; start < archive.length; start += CHUNK_BYTES) {
      const chunk = archive.subarray(start, start + CHUNK_BYTES);
      yield { part: { case: /** @type {const} */ ("chunk"), value: chunk } };
    }
  }
  const { package: stored } = await packages.uploadPackage(requests());
  if (!stored) throw new Error("UploadPackage answered without a package");
  return stored;
}

/**
 * What a failed call says: its gRPC code and the rich details Capstan sends.
 * @param {unknown} thrown
 */
function failure(thrown) {
  const error = ConnectError.from(thrown);
  const [info] = error.findDetails(ErrorInfoSchema);
  const violations = error.findDetails(BadRequestSchema).flatMap((b) => b.fieldViolations);
  return {
    code: grpcCodeName(error.code),
    message: error.rawMessage,
    reason: info?.reason ?? "",
    metadata: info?.metadata ?? {},
    fields: violations.map((v) => v.field),
  };
}

/** @param {Code} code connect's name (InvalidArgument) as gRPC's (INVALID_ARGUMENT) */
const grpcCodeName = (code) => Code[code].replace(/(?<!^)(?=[A-Z])/g, "_").toUpperCase();

/** @param {() => Promise<unknown>} call the failure a call must end with */
async function failureOf(call) {
  try {
    await call();
  } catch (thrown) {
    return failure(thrown);
  }
  throw new Error("the call was expected to fail and did not");
}

/** @type {Record<string, unknown>} */
const seen = {};
const folder = await mkdtemp(path.join(tmpdir(), "capstan-node-"));
try {
  await writeFile(path.join(folder, "greeter.py"), GREETER_PY);
  const stored = await upload(await pack(folder));
  seen.package_uri = stored.uri;

  const spec = {
    name: NAME,
    code: { source: { case: /** @type {const} */ ("importPath"), value: "greeter:Greeter" } },
    // Constructor arguments are JSON too: Greeter("Hi").
    initArguments: { args: fromJson(ListValueSchema, ["Hi"]) },
    replicaOptions: { numCpus: 0.25, runtimeEnv: { workingDir: stored.uri } },
  };
  const applied = await control.applyDeployment({ spec, wait: true }, slow);
  seen.applied_replicas = applied.deployment?.replicas.length;
  const storedArgs = applied.deployment?.spec?.initArguments?.args;
  seen.init_args = storedArgs ? toJson(ListValueSchema, storedArgs) : null;

  // Arguments and results are JSON: proto JSON builds the request as written.
  const arguments_ = { args: ["Ada"], kwargs: { punct: "?" } };
  const called = await data.call(
    fromJson(CallRequestSchema, { deployment: NAME, methodName: "greet", arguments: arguments_ }),
  );
  seen.result = called.result ? toJson(ValueSchema, called.result) : null;

  const spelling = { deployment: NAME, methodName: "spell", arguments: { args: ["Ada"] } };
  const streamed = [];
  for await (const reply of data.callStream(fromJson(CallStreamRequestSchema, spelling))) {
    streamed.push(reply.item ? toJson(ValueSchema, reply.item) : null);
  }
  seen.streamed = streamed;

  const route = applied.deployment?.spec?.routePrefix ?? `/${NAME}`;
  const answer = await fetch(`${httpUrl}${route}?name=Grace`);
  seen.http = { status: answer.status, body: await answer.json() };

  const scaled = await control.scaleDeployment({ name: NAME, numReplicas: 2, wait: true }, slow);
  const running = scaled.deployment?.replicas.filter((r) => r.state === ReplicaState.RUNNING);
  seen.scaled_running = running?.length;

  const badSpec = { ...spec, name: "node_bad", replicaOptions: { numCpus: -1 } };
  seen.invalid = await failureOf(() => control.applyDeployment({ spec: badSpec }));
  seen.unknown = await failureOf(() => data.call({ deployment: "no_such_deployment" }));

  await control.deleteDeployment({ name: NAME, wait: true }, slow);
  seen.deleted = true;
} finally {
  await rm(folder, { recursive: true, force: true });
  // After a failure, still leave nothing behind (the failure is what counts).
  if (!seen.deleted) await control.deleteDeployment({ name: NAME }).catch(() => {});
}
// Listing comes in pages (AIP-158): follow nextPageToken until it is empty.
const afterDelete = [];
let pageToken = "";
do {
  const page = await control.listDeployments({ pageToken });
  afterDelete.push(...page.deployments.map((d) => d.id));
  pageToken = page.nextPageToken;
} while (pageToken);
seen.after_delete = afterDelete;
console.log(JSON.stringify(seen));
