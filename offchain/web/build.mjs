// Bundles the marketplace page's JavaScript (offchain/web/src/) with its npm libraries (viem for the chain and the
// wallet, uPlot for charts) into offchain/web/static/dist/, which is committed and ships with the package: the page
// needs no CDN and no build step where it is served. `npm run build:web` writes it; `--outdir DIR` writes elsewhere
// (the test that checks the committed bundle is the build of the sources does so). Output is deterministic.
import { build } from "esbuild";
import path from "node:path";
import { fileURLToPath } from "node:url";

const here = path.dirname(fileURLToPath(import.meta.url));
const flag = process.argv.indexOf("--outdir");
const outdir = flag >= 0 ? path.resolve(process.argv[flag + 1]) : path.join(here, "static", "dist");

await build({
  entryPoints: { gpuex: path.join(here, "src", "main.js") },
  outdir,
  bundle: true,
  format: "iife",
  platform: "browser",
  target: ["es2022"],
  minify: true,
  sourcemap: false,
  legalComments: "eof",
  charset: "utf8",
  logLevel: "warning",
});
