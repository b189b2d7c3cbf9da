// Copies the built files of the console's npm packages into vendor/ (shipped in the wheel).
import { cpSync, mkdirSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const files = {
  "alpine.min.js": "node_modules/@alpinejs/csp/dist/cdn.min.js",  // the build that needs no 'unsafe-eval'
  "chart.umd.min.js": "node_modules/chart.js/dist/chart.umd.min.js",
};
mkdirSync(join(here, "vendor"), { recursive: true });
for (const [name, from] of Object.entries(files)) {
  cpSync(join(here, from), join(here, "vendor", name));
  console.log(`vendor/${name} <- ${from}`);
}
