// A worker module for the WorkerPool tests: answers {n} with n * 2, fails on {fail: text}, and
// ends its thread on {exit: code} without answering.
import { serveJobs } from '../../src/core/worker-pool.js';

serveJobs<{ n?: number; fail?: string; exit?: number }, number>((req) => {
  if (req.exit !== undefined) process.exit(req.exit);
  if (req.fail) throw new Error(req.fail);
  return (req.n ?? 0) * 2;
});
