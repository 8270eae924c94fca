// Creates real Bull (`bull`) and BullMQ (`bullmq`) jobs in Redis under one key prefix, for
// tests/migrate: waiting, delayed, prioritized, failed and completed jobs, some of which the
// test's mapping cannot take. Prints what it made as one JSON object on stdout.
//
//   node seed.js REDIS_URL PREFIX
//
// Failed and completed jobs are made first by a worker that runs only them, then closed, so
// the waiting jobs added after it are never taken.
"use strict";

const Bull = require("bull");
const { Queue, Worker } = require("bullmq");

const [redisUrl, prefix] = process.argv.slice(2);
if (!redisUrl || !prefix) {
  console.error("usage: node seed.js REDIS_URL PREFIX");
  process.exit(2);
}
const url = new URL(redisUrl);
const connection = {
  host: url.hostname,
  port: Number(url.port || 6379),
  db: Number((url.pathname || "/0").slice(1) || 0),
  maxRetriesPerRequest: null,
};
const HOUR = 3600 * 1000;

function email(n, extra = {}) {
  return {
    recipient: `buyer${n}@example.com`,
    subject: `Order ${n} shipped`,
    templateId: "order-shipped",
    variables: { orderId: n, ...extra },
  };
}

// Resolves once `count` jobs finished (completed or failed).
function settled(emitter, count) {
  return new Promise((resolve) => {
    let seen = 0;
    const done = () => {
      seen += 1;
      if (seen === count) resolve();
    };
    emitter.on("completed", done);
    emitter.on("failed", done);
  });
}

async function seedBull(made) {
  const email_ = new Bull("email", redisUrl, { prefix });
  const legacy = new Bull("legacy", redisUrl, { prefix });
  // A worker for the failed and the completed job only.
  const failing = await email_.add(email(1, { fail: true }), { attempts: 1 });
  const completed = await email_.add(email(2));
  const finished = settled(email_, 2);
  email_.process(async (job) => {
    if (job.data.variables.fail) throw new Error("smtp down");
    return "sent";
  });
  await finished;
  await email_.close();

  const queue = new Bull("email", redisUrl, { prefix });
  const waiting = [await queue.add(email(3)), await queue.add(email(4))];
  const delayed = await queue.add(email(5), { delay: HOUR });
  const invalid = await queue.add({ ...email(6), recipient: "not-an-email" });
  const unmapped = await legacy.add({ anything: true });
  // A paused queue: Bull moves its waiting jobs to the `paused` list.
  const newsletter = new Bull("newsletter", redisUrl, { prefix });
  const paused = await newsletter.add(email(8));
  await newsletter.pause();
  await newsletter.close();
  // A repeatable job: its definition and next run are reported, not imported.
  await queue.add("digest", email(7), { repeat: { cron: "0 8 * * *" } });
  made.bull = {
    failed: [String(failing.id)],
    completed: [String(completed.id)],
    waiting: waiting.map((job) => String(job.id)),
    delayed: [String(delayed.id)],
    invalid: [String(invalid.id)],
    unmapped: [String(unmapped.id)],
    paused: [String(paused.id)],
  };
  await queue.close();
  await legacy.close();
}

async function seedBullmq(made) {
  const opts = { connection, prefix };
  const sync = new Queue("prestashop", opts);
  const analytics = new Queue("analytics", opts);

  const failing = await sync.add("sync", { type: "sync-orders", tenantId: "t1", siteId: "shop-9" });
  const worker = new Worker(
    "prestashop",
    async () => {
      throw new Error("prestashop timeout");
    },
    opts,
  );
  await settled(worker, 1);
  await worker.close();

  const waiting = [
    await sync.add("sync", {
      type: "sync-orders",
      tenantId: "t1",
      siteId: "shop-1",
      lastDays: 7,
      bulkMode: false,
    }),
    await sync.add("sync", { type: "sync-single-order", tenantId: "t1", orderId: 42 }),
  ];
  const prioritized = await sync.add(
    "sync",
    { type: "sync-orders", tenantId: "t1", siteId: "shop-3" },
    { priority: 5 },
  );
  const delayed = await sync.add(
    "sync",
    { type: "sync-products", tenantId: "t1", siteId: "shop-2", incremental: false },
    { delay: 2 * HOUR },
  );
  const unknownType = await sync.add("sync", { type: "sync-customers", tenantId: "t1" });
  const otherTenant = await sync.add("sync", { type: "sync-orders", tenantId: "t2", siteId: "x" });
  const pageview = await analytics.add("pageview", { name: "page.view", properties: { path: "/" } });
  const unknownName = await analytics.add("click", { name: "click" });
  const farDelayed = await analytics.add(
    "pageview",
    { name: "page.later", properties: {} },
    { delay: 72 * HOUR },
  );
  await analytics.upsertJobScheduler(
    "hourly",
    { pattern: "0 * * * *" },
    { name: "pageview", data: { name: "hourly.report" } },
  );
  made.bullmq = {
    failed: [failing.id],
    waiting: [...waiting.map((job) => job.id), pageview.id],
    prioritized: [prioritized.id],
    delayed: [delayed.id],
    unknown_type: [unknownType.id],
    other_tenant: [otherTenant.id],
    unknown_name: [unknownName.id],
    far_delayed: [farDelayed.id],
  };
  await sync.close();
  await analytics.close();
}

async function main() {
  const made = { prefix };
  await seedBull(made);
  await seedBullmq(made);
  process.stdout.write(JSON.stringify(made) + "\n");
}

main().then(
  () => process.exit(0),
  (error) => {
    console.error(error);
    process.exit(1);
  },
);
