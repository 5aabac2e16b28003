// scripts/grpc-web-client.cjs — a real gRPC-web client (Connect's createGrpcWebTransport, the
// browser transport, on node's fetch) logs in and makes an authenticated call.
//
// Usage: NODE_PATH=<.tools/node_modules> node scripts/grpc-web-client.cjs \
//          BASE_URL DESCRIPTOR_SET USERNAME PASSWORD
//
// No generated code: the service definitions come from the encoded descriptor set (what
// `buf build proto -o FILE` writes), through @bufbuild/protobuf's registry. Exits non-zero
// with a message on any unexpected answer. Installed by scripts/tools.sh (npm, pinned).
"use strict";

const { readFileSync } = require("node:fs");
const { createClient, ConnectError, Code } = require("@connectrpc/connect");
const { createGrpcWebTransport } = require("@connectrpc/connect-web");
const { createFileRegistry, fromBinary } = require("@bufbuild/protobuf");
const { FileDescriptorSetSchema } = require("@bufbuild/protobuf/wkt");

async function main() {
  const [baseUrl, descriptorPath, username, password] = process.argv.slice(2);
  if (!password) {
    throw new Error("usage: grpc-web-client.cjs BASE_URL DESCRIPTOR_SET USERNAME PASSWORD");
  }
  const registry = createFileRegistry(
    fromBinary(FileDescriptorSetSchema, readFileSync(descriptorPath)),
  );
  const service = (name) => {
    const found = registry.getService(name);
    if (!found) throw new Error(`${name} is not in ${descriptorPath}`);
    return found;
  };
  const transport = createGrpcWebTransport({ baseUrl });
  const sessions = createClient(service("tally.v1.SessionService"), transport);
  const roles = createClient(service("tally.v1.RoleService"), transport);
  const users = createClient(service("tally.v1.UserService"), transport);

  // Without a token: UNAUTHENTICATED, read from the gRPC-web trailers-only answer.
  try {
    await roles.listRoles({});
    throw new Error("ListRoles without a token succeeded");
  } catch (err) {
    if (!(err instanceof ConnectError) || err.code !== Code.Unauthenticated) throw err;
    console.log(`grpc-web: ListRoles without a token -> ${Code[err.code]}: ${err.rawMessage}`);
  }

  const login = await sessions.login({ username, password });
  console.log(`grpc-web: Login -> session ${login.sessionId}`);
  const headers = { authorization: `Bearer ${login.accessToken}` };
  const me = await users.getUser({ username }, { headers });
  if (me.username !== username) throw new Error(`GetUser returned ${me.username}`);
  const listed = await roles.listRoles({}, { headers });
  const names = listed.roles.map((r) => r.name);
  if (!names.includes("customer")) throw new Error(`ListRoles returned ${names}`);
  console.log(`grpc-web: GetUser -> ${me.username} (${me.roles.join(",")}); ListRoles -> ${names.join(",")}`);
  console.log("grpc-web: OK");
}

main().catch((err) => {
  console.error(`grpc-web-client: FAILED: ${err && err.stack ? err.stack : err}`);
  process.exit(1);
});
