// Compiles chain/contracts with solc-js (standard JSON) and writes one artifact per
// top-level contract: <out>/<Name>.json = {contract, compiler, abi, bytecode,
// deployedBytecode}. Run it through scripts/contracts.sh, which installs the pinned
// solc and passes its location.
//
//   node scripts/compile-contracts.mjs --solc <dir of the solc package> \
//       --version <expected solc version> --out <artifacts dir>
//
// Every `*.sol` under chain/contracts (artifacts excluded) is a source, named by its
// path relative to that folder so the output does not depend on where the tree is
// checked out. A file `X.sol` at the top level yields the artifact of contract `X`;
// files under lib/ are only imported. Warnings fail the build like errors.

import { createRequire } from "node:module";
import { mkdirSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { dirname, join, relative, sep } from "node:path";
import { fileURLToPath } from "node:url";

// Part of the artifacts: changing either changes the bytecode.
const EVM_VERSION = "paris";
const OPTIMIZER_RUNS = 200;

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const contractsDir = join(root, "chain", "contracts");

function args() {
  const out = {};
  const argv = process.argv.slice(2);
  for (let i = 0; i < argv.length; i += 2) {
    const key = argv[i].replace(/^--/, "");
    if (!["solc", "version", "out"].includes(key) || argv[i + 1] === undefined) {
      throw new Error(`usage: compile-contracts.mjs --solc DIR --version X.Y.Z --out DIR (bad argument ${argv[i]})`);
    }
    out[key] = argv[i + 1];
  }
  for (const key of ["solc", "version", "out"]) {
    if (!out[key]) throw new Error(`missing --${key}`);
  }
  return out;
}

function solidityFiles(dir) {
  const files = [];
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) {
      if (entry.name !== "artifacts" && entry.name !== "node_modules") files.push(...solidityFiles(path));
    } else if (entry.name.endsWith(".sol")) {
      files.push(path);
    }
  }
  return files;
}

function main() {
  const opts = args();
  const solc = createRequire(import.meta.url)(opts.solc);
  const version = solc.version();
  if (!version.startsWith(`${opts.version}+`)) {
    throw new Error(`solc at ${opts.solc} is ${version}, expected ${opts.version}`);
  }

  const names = solidityFiles(contractsDir)
    .map((p) => relative(contractsDir, p).split(sep).join("/"))
    .sort();
  const sources = {};
  for (const name of names) {
    sources[name] = { content: readFileSync(join(contractsDir, name), "utf8") };
  }
  const settings = {
    optimizer: { enabled: true, runs: OPTIMIZER_RUNS },
    evmVersion: EVM_VERSION,
    outputSelection: {
      "*": { "*": ["abi", "evm.bytecode.object", "evm.deployedBytecode.object"] },
    },
  };
  const output = JSON.parse(
    solc.compile(JSON.stringify({ language: "Solidity", sources, settings })),
  );

  const problems = output.errors ?? [];
  for (const p of problems) {
    process.stderr.write(p.formattedMessage ?? `${p.severity}: ${p.message}\n`);
  }
  if (problems.length > 0) {
    throw new Error(`solc reported ${problems.length} error(s) or warning(s)`);
  }

  mkdirSync(opts.out, { recursive: true });
  const compiler = {
    name: "solc",
    version,
    evmVersion: EVM_VERSION,
    optimizer: { enabled: true, runs: OPTIMIZER_RUNS },
  };
  let written = 0;
  for (const name of names.filter((n) => !n.includes("/"))) {
    const contract = name.replace(/\.sol$/, "");
    const compiled = output.contracts?.[name]?.[contract];
    if (!compiled) throw new Error(`${name} does not define contract ${contract}`);
    const artifact = {
      contract,
      compiler,
      abi: compiled.abi,
      bytecode: `0x${compiled.evm.bytecode.object}`,
      deployedBytecode: `0x${compiled.evm.deployedBytecode.object}`,
    };
    writeFileSync(join(opts.out, `${contract}.json`), `${JSON.stringify(artifact, null, 2)}\n`);
    written += 1;
  }
  process.stderr.write(`compiled ${names.length} sources with solc ${version}, wrote ${written} artifacts to ${opts.out}\n`);
}

try {
  main();
} catch (e) {
  process.stderr.write(`compile-contracts: ${e.message}\n`);
  process.exit(1);
}
