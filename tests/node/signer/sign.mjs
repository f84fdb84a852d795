// A non-Python agency client: signs an opinion reply the way any agency can, with
// Node's built-in Ed25519 over the reply's RFC 8785 canonical JSON (npm `canonicalize`).
//
// stdin:  {"private_key_pem", "request_id", "decision", "conditions", "reasons",
//          "signer", "nonce"}   (conditions/reasons may be null)
// stdout: the JSON body of POST /v1/consultations/{request_id}/reply
import { createPrivateKey, sign } from "node:crypto";
import { readFileSync } from "node:fs";
import canonicalize from "canonicalize";

const input = JSON.parse(readFileSync(0, "utf8"));
const key = createPrivateKey(input.private_key_pem);

// The signed content: every field present, absent texts as "" (see the README).
const content = {
  request_id: input.request_id,
  decision: input.decision,
  conditions: input.conditions ?? "",
  reasons: input.reasons ?? "",
  signer: input.signer,
  nonce: input.nonce,
};
const message = Buffer.from(canonicalize(content), "utf8");
const signature = sign(null, message, key).toString("base64");

process.stdout.write(
  JSON.stringify({
    decision: input.decision,
    conditions: input.conditions ?? null,
    reasons: input.reasons ?? null,
    signer: input.signer,
    nonce: input.nonce,
    signature,
  }),
);
