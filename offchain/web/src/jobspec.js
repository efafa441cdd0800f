// A job spec as `offchain.agent.jobspec.JobSpec` writes it, and the hash a renter puts on chain: keccak256 of its
// canonical JSON (every field present, keys sorted, no whitespace, non-ASCII as \u escapes), so that the agent,
// which hashes the uploaded spec the same way, finds the rental's `jobSpecHash`.
import { keccak256, stringToBytes } from "viem";

/** Every field of a spec with its default, as `JobSpec.model_dump(mode="json")` writes a spec of these fields. */
export function buildSpec({ command, image, timeoutSeconds }) {
  if (!command || command.length === 0) throw new Error("the job needs a command");
  return {
    command,
    args: [],
    env: {},
    secret_env: [],
    working_dir: ".",
    image: image || null,
    timeout_seconds: timeoutSeconds || null,
    output_dir: "out",
    network: "none",
    resources: { memory_mib: null, cpus: null },
  };
}

function sorted(value) {
  if (Array.isArray(value)) return value.map(sorted);
  if (value === null || typeof value !== "object") return value;
  return Object.fromEntries(Object.keys(value).sort().map((key) => [key, sorted(value[key])]));
}

/** Python's `json.dumps(spec, sort_keys=True, separators=(",", ":"), ensure_ascii=True)`. */
export function canonicalJson(spec) {
  // JSON.stringify escapes the control characters as Python does; Python also escapes DEL and every non-ASCII
  // UTF-16 unit (an astral character as its surrogate pair).
  const escape = (c) => "\\u" + c.charCodeAt(0).toString(16).padStart(4, "0");
  return JSON.stringify(sorted(spec)).replace(/[\u007f-\uffff]/g, escape);
}

/** The `jobSpecHash` of a spec (0x-hex bytes32). */
export function specHash(spec) {
  return keccak256(stringToBytes(canonicalJson(spec)));
}

/**
 * A command line split into arguments as a POSIX shell splits words (Python's `shlex.split`): blanks separate,
 * single quotes keep everything, double quotes keep all but a backslash before `"`, `\`, `$` or a backquote, and a
 * backslash outside quotes keeps the next character. No expansion of any kind.
 */
export function splitCommand(line) {
  const words = [];
  let word = null;
  for (let i = 0; i < line.length; i++) {
    const c = line[i];
    if (c === " " || c === "\t" || c === "\n" || c === "\r") {
      if (word !== null) words.push(word);
      word = null;
    } else if (c === "'") {
      const end = line.indexOf("'", i + 1);
      if (end < 0) throw new Error("the command has an unclosed single quote");
      word = (word ?? "") + line.slice(i + 1, end);
      i = end;
    } else if (c === '"') {
      word = word ?? "";
      for (i++; ; i++) {
        if (i >= line.length) throw new Error("the command has an unclosed double quote");
        if (line[i] === '"') break;
        if (line[i] === "\\" && i + 1 < line.length && '"\\$`'.includes(line[i + 1])) i++;
        word += line[i];
      }
    } else if (c === "\\") {
      if (i + 1 >= line.length) throw new Error("the command ends with a lone backslash");
      word = (word ?? "") + line[++i];
    } else {
      word = (word ?? "") + c;
    }
  }
  if (word !== null) words.push(word);
  return words;
}
