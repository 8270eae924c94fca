/**
 * A thin typed client for the jobgate REST API.
 *
 * The types come from `schema.d.ts`, generated from the repository's `openapi.yaml`
 * (`npm run generate`); requests go through openapi-fetch. On top of that this wrapper adds
 * what every integrator would otherwise write by hand: an `Idempotency-Key` on each submission,
 * bounded retries of 429 and 503 that honour `Retry-After`, and errors that carry the
 * problem+json body (RFC 9457) the gateway answers with.
 */
import createClient, { type Client } from "openapi-fetch";

import type { components, paths } from "./schema.js";

export type { components, paths } from "./schema.js";

type Schemas = components["schemas"];
export type Job = Schemas["JobPublic"];
export type JobPage = Schemas["JobPage"];
export type JobStatus = Schemas["JobStatus"];
export type JobAttempts = Schemas["AttemptList"];
export type JobBatchResponse = Schemas["JobBatchResponse"];
export type Problem = Schemas["Problem"];
export type FieldError = Schemas["FieldError"];
/** One job as submitted: `type` picks the payload's shape. */
export type JobRequest = paths["/v1/jobs"]["post"]["requestBody"]["content"]["application/json"];
export type ListJobsQuery = NonNullable<paths["/v1/jobs"]["get"]["parameters"]["query"]>;

export interface JobgateClientOptions {
  /** The gateway, e.g. `https://jobs.example.com`. */
  baseUrl: string;
  /** A tenant API key (or a JWT): sent as `Authorization: Bearer ...`. */
  apiKey: string;
  /** Tries per request, the first included, when the gateway answers 429 or 503. Default 3. */
  maxAttempts?: number;
  /** A `Retry-After` longer than this (ms) is not waited for: the error is thrown. Default 30 s. */
  maxRetryDelayMs?: number;
  /** The wait (ms) before the first retry when the answer has no `Retry-After`; doubles each time. */
  backoffMs?: number;
  /** Another fetch (tests, proxies). Default: the global fetch. */
  fetch?: typeof globalThis.fetch;
  /** Extra headers on every request. */
  headers?: Record<string, string>;
}

export interface SubmitOptions {
  /** Repeats with the same key answer the original job; default: a fresh random key. */
  idempotencyKey?: string;
}

const RETRIED_STATUSES = new Set([429, 503]);

/** Any non-2xx answer from the gateway; `problem` is its problem+json body. */
export class JobgateError extends Error {
  readonly status: number;
  readonly problem: Problem;
  /** Seconds the gateway asked to wait (429, 503), if it said so. */
  readonly retryAfter: number | undefined;

  constructor(status: number, problem: Problem, retryAfter: number | undefined) {
    super(`${status} ${problem.title}: ${problem.detail}`);
    this.name = new.target.name;
    this.status = status;
    this.problem = problem;
    this.retryAfter = retryAfter;
  }

  get title(): string {
    return this.problem.title;
  }

  get detail(): string {
    return this.problem.detail;
  }

  /** The invalid fields of a 422 (empty otherwise). */
  get errors(): FieldError[] {
    return this.problem.errors ?? [];
  }
}

/** 422: the body or query is invalid; `errors` names each field. */
export class JobgateValidationError extends JobgateError {}
/** 429: over a rate limit or quota, still after the client's retries. */
export class JobgateRateLimitError extends JobgateError {}
/** 503: the gateway cannot take the request now, still after the client's retries. */
export class JobgateUnavailableError extends JobgateError {}
/** 404: no such job for this tenant (another tenant's job is 404 too). */
export class JobgateNotFoundError extends JobgateError {}

/** Seconds from a `Retry-After` header: delta-seconds or an HTTP date. */
export function parseRetryAfter(value: string | null, now: number = Date.now()): number | undefined {
  if (value === null || value.trim() === "") return undefined;
  if (/^\d+$/.test(value.trim())) return Number(value.trim());
  const at = Date.parse(value);
  if (Number.isNaN(at)) return undefined;
  return Math.max(0, Math.ceil((at - now) / 1000));
}

function asProblem(status: number, statusText: string, body: unknown): Problem {
  if (typeof body === "object" && body !== null && "title" in body) return body as Problem;
  // Not problem+json (a proxy's answer, say): keep the status and whatever text came back.
  const detail = typeof body === "string" ? body.slice(0, 500) : "";
  return { type: "about:blank", title: statusText || `HTTP ${status}`, status, detail };
}

/** The error class for an answer, carrying its problem. */
export function errorFor(response: Response, body: unknown): JobgateError {
  const problem = asProblem(response.status, response.statusText, body);
  const retryAfter = parseRetryAfter(response.headers.get("Retry-After"));
  const kind =
    response.status === 422
      ? JobgateValidationError
      : response.status === 429
        ? JobgateRateLimitError
        : response.status === 503
          ? JobgateUnavailableError
          : response.status === 404
            ? JobgateNotFoundError
            : JobgateError;
  return new kind(response.status, problem, retryAfter);
}

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

/** A fetch that repeats a request answered 429 or 503, waiting as the gateway asks. */
export function retryingFetch(
  options: Pick<JobgateClientOptions, "maxAttempts" | "maxRetryDelayMs" | "backoffMs" | "fetch">,
): (input: Request) => Promise<Response> {
  const maxAttempts = Math.max(1, options.maxAttempts ?? 3);
  const maxDelayMs = options.maxRetryDelayMs ?? 30_000;
  const backoffMs = options.backoffMs ?? 500;
  const send = options.fetch ?? globalThis.fetch;
  return async (request: Request): Promise<Response> => {
    for (let attempt = 1; ; attempt++) {
      // A body can be read once: each try sends a fresh copy of the original request.
      const response = await send(request.clone());
      if (!RETRIED_STATUSES.has(response.status) || attempt >= maxAttempts) return response;
      const asked = parseRetryAfter(response.headers.get("Retry-After"));
      const delayMs = asked !== undefined ? asked * 1000 : backoffMs * 2 ** (attempt - 1);
      if (delayMs > maxDelayMs) return response;
      await response.body?.cancel();
      await sleep(delayMs);
    }
  };
}

export interface JobgateClient {
  /** Submit one job: the stored job (202; 200 for a repeat of the same idempotency key). */
  submit(job: JobRequest, options?: SubmitOptions): Promise<Job>;
  /** Submit 1..100 jobs atomically; each without an `idempotency_key` gets a random one. */
  batch(jobs: JobRequest[]): Promise<Job[]>;
  /** One of the tenant's jobs. */
  get(jobId: string): Promise<Job>;
  /** One page of the tenant's jobs, newest first; pass `next_cursor` back as `cursor`. */
  list(query?: ListJobsQuery): Promise<JobPage>;
  /** Every job matching `query`, page after page. */
  iterate(query?: Omit<ListJobsQuery, "cursor">): AsyncGenerator<Job>;
  /** A job's attempts, oldest first. */
  attempts(jobId: string): Promise<JobAttempts>;
  /** Cancel an accepted, queued or retrying job. */
  cancel(jobId: string): Promise<Job>;
  /** Run a failed, dead or cancelled job again. */
  retry(jobId: string): Promise<Job>;
  /** The generated openapi-fetch client, for every other route (same auth and retries). */
  api: Client<paths>;
}

interface Answer<T> {
  data?: T;
  error?: unknown;
  response: Response;
}

function unwrap<T>({ data, error, response }: Answer<T>): T {
  if (!response.ok) throw errorFor(response, error);
  return data as T;
}

export function createJobgateClient(options: JobgateClientOptions): JobgateClient {
  const api = createClient<paths>({
    baseUrl: options.baseUrl.replace(/\/+$/, ""),
    headers: { ...options.headers, Authorization: `Bearer ${options.apiKey}` },
    fetch: retryingFetch(options),
  });
  const client: JobgateClient = {
    api,
    async submit(job, submitOptions = {}) {
      const key = submitOptions.idempotencyKey ?? job.idempotency_key ?? crypto.randomUUID();
      return unwrap(
        await api.POST("/v1/jobs", { body: job, params: { header: { "Idempotency-Key": key } } }),
      );
    },
    async batch(jobs) {
      const keyed = jobs.map((job) => ({
        ...job,
        idempotency_key: job.idempotency_key ?? crypto.randomUUID(),
      }));
      return unwrap(await api.POST("/v1/jobs/batch", { body: { jobs: keyed } })).jobs;
    },
    async get(jobId) {
      return unwrap(await api.GET("/v1/jobs/{job_id}", { params: { path: { job_id: jobId } } }));
    },
    async list(query = {}) {
      return unwrap(await api.GET("/v1/jobs", { params: { query } }));
    },
    async *iterate(query = {}) {
      let cursor: string | undefined;
      do {
        const page = await client.list({ ...query, cursor });
        yield* page.data;
        cursor = page.next_cursor ?? undefined;
      } while (cursor);
    },
    async attempts(jobId) {
      return unwrap(
        await api.GET("/v1/jobs/{job_id}/attempts", { params: { path: { job_id: jobId } } }),
      );
    },
    async cancel(jobId) {
      return unwrap(
        await api.POST("/v1/jobs/{job_id}/cancel", { params: { path: { job_id: jobId } } }),
      );
    },
    async retry(jobId) {
      return unwrap(
        await api.POST("/v1/jobs/{job_id}/retry", { params: { path: { job_id: jobId } } }),
      );
    },
  };
  return client;
}
