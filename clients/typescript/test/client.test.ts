// Against a running gateway: JOBGATE_URL and JOBGATE_KEY (a tenant's key) name it, and the
// gateway allows only a few submissions a second (JOBGATE_RATE_LIMIT_JOBS), so a
// burst meets 429s. `tests/clients/test_typescript.py` starts one and runs `npm test`.
import assert from "node:assert/strict";
import { test } from "node:test";

import {
  type JobRequest,
  JobgateError,
  JobgateNotFoundError,
  JobgateRateLimitError,
  JobgateValidationError,
  createJobgateClient,
} from "../src/index.js";

const baseUrl = process.env.JOBGATE_URL;
const apiKey = process.env.JOBGATE_KEY;
if (!baseUrl || !apiKey) throw new Error("set JOBGATE_URL and JOBGATE_KEY (a tenant's key)");

const event = (name: string): JobRequest => ({ type: "analytics-event", name });
const client = createJobgateClient({ baseUrl, apiKey });

test("submit answers the stored job and an idempotency key makes a repeat the same job", async () => {
  const job = await client.submit(event("ts-submit"));
  assert.equal(job.type, "analytics-event");
  assert.equal(job.payload.name, "ts-submit");
  assert.ok(job.idempotency_key, "the client sets an Idempotency-Key by itself");

  const first = await client.submit(event("ts-once"), { idempotencyKey: "ts-key-1" });
  const again = await client.submit(event("ts-once"), { idempotencyKey: "ts-key-1" });
  assert.equal(again.id, first.id);
});

test("batch, get and list", async () => {
  const jobs = await client.batch([event("ts-batch-1"), event("ts-batch-2")]);
  assert.deepEqual(
    jobs.map((job) => job.payload.name),
    ["ts-batch-1", "ts-batch-2"],
  );
  const got = await client.get(jobs[0].id);
  assert.equal(got.id, jobs[0].id);

  const page = await client.list({ type: "analytics-event", limit: 1 });
  assert.equal(page.data.length, 1);
  assert.ok(page.next_cursor, "more than one job: a cursor to the next page");
  const ids: string[] = [];
  for await (const job of client.iterate({ type: "analytics-event", limit: 2 })) ids.push(job.id);
  assert.ok(jobs.every((job) => ids.includes(job.id)));
});

test("a 422 throws a validation error carrying the problem and its field errors", async () => {
  await assert.rejects(
    // A deliberately invalid job: the cast stands for input the types cannot check.
    client.submit({ type: "send-email", to: "not-an-address" } as unknown as JobRequest),
    (error: unknown) => {
      assert.ok(error instanceof JobgateValidationError);
      assert.equal(error.status, 422);
      assert.equal(error.problem.status, 422);
      assert.ok(error.title.length > 0);
      assert.ok(error.errors.length > 0, "422 names the invalid fields");
      return true;
    },
  );
});

test("another tenant's or a missing job is a 404 error", async () => {
  await assert.rejects(client.get("no-such-job"), (error: unknown) => {
    assert.ok(error instanceof JobgateNotFoundError);
    assert.ok(error instanceof JobgateError);
    assert.equal(error.status, 404);
    return true;
  });
});

test("a burst over the rate limit: without retries a 429 with Retry-After is thrown", async () => {
  const once = createJobgateClient({ baseUrl, apiKey, maxAttempts: 1 });
  const results = await Promise.allSettled(
    Array.from({ length: 8 }, (_, n) => once.submit(event(`ts-burst-${n}`))),
  );
  const refused = results.filter((r) => r.status === "rejected");
  assert.ok(refused.length > 0, "the burst exceeds the gateway's limit");
  for (const r of refused) {
    const error = (r as PromiseRejectedResult).reason as unknown;
    assert.ok(error instanceof JobgateRateLimitError, String(error));
    assert.equal(error.status, 429);
    assert.ok(error.retryAfter !== undefined && error.retryAfter >= 0, "429 says when to retry");
  }
});

test("a burst over the rate limit: with retries every submission ends stored", async () => {
  const patient = createJobgateClient({ baseUrl, apiKey, maxAttempts: 10 });
  const jobs = await Promise.all(
    Array.from({ length: 8 }, (_, n) => patient.submit(event(`ts-retried-${n}`))),
  );
  assert.equal(new Set(jobs.map((job) => job.id)).size, 8);
});
