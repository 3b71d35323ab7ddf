import { shutdownGraceMillis } from '../service/main';

/**
 * How an update replaces the service replicas with no failed delivery, and what the program asks of
 * Pulumi, Docker and nginx for it to happen that way. infra/index.ts takes its settings from here, and
 * infra/test/rollout.e2e.test.ts runs `replicaRolloutPlan` for real (nginx in front of service
 * processes while signed deliveries flow), so the two cannot drift apart.
 *
 * Pulumi replaces a resource create-before-delete unless told otherwise, and deletes the replaced ones
 * at the end of the deployment, dependents first (pulumi/pulumi#9979). So each replica
 *  - has no fixed container name: Docker names it, and its replacement can run beside it;
 *  - depends on the replica before it: the replacements are created one after another;
 *  - is created with `wait`: Pulumi moves on once Docker reports it healthy, i.e. once its first
 *    health check (`healthcheck.intervalSeconds` after start) has passed.
 * Then the old replicas are stopped, the last one first: SIGTERM, the service stops accepting connections
 * and finishes its in-flight requests, Docker kills it only after `stopGraceSeconds.service`.
 *
 * The edge sends nothing to a stopped replica: nginx resolves the replicas' shared name again every
 * `resolverValidSeconds`, fewer than a replica needs to become healthy, so it knows each new replica
 * before any old one stops; a connection refused by a draining replica, or to the address of one that
 * is gone, is retried on another (`proxy_next_upstream`; also for the webhook's POST, which is safe to
 * repeat because exactly-once lives in SQL).
 */

/** The replicas' health check (Docker runs the first one this long after start). */
export const healthcheck = { intervalSeconds: 5, timeoutSeconds: 3, retries: 3, startPeriodSeconds: 20 };

/** How long nginx keeps the replicas' addresses before asking Docker's DNS again. */
export const resolverValidSeconds = 2;

/** How long Pulumi waits for a new replica to become healthy before it fails the update. */
export const healthWaitSeconds = 120;

/**
 * How long Docker waits after the stop signal before it kills, when a container is replaced or removed
 * (`destroyGraceSeconds`; unset, the provider kills at once) and when it is stopped (`stopTimeout`).
 * PostgreSQL shuts down with a checkpoint; a replica finishes its in-flight requests first.
 */
export const stopGraceSeconds = {
  postgres: 90,
  /** Between two dumps it stops at once; a dump that runs longer is cut (the next one starts over). */
  backups: 30,
  service: Math.ceil(shutdownGraceMillis / 1000) + 5,
  nginx: 10,
};

export type RolloutStep =
  /** Create replica N's replacement and wait until it is healthy. */
  | { action: 'start'; replica: number }
  /** Stop the old replica N (SIGTERM, drain) and remove it. */
  | { action: 'stop'; replica: number };

/** What `pulumi up` does to the replicas when each must be replaced (a new image, new settings). */
export function replicaRolloutPlan(replicas: number): RolloutStep[] {
  const order = Array.from({ length: replicas }, (_, index) => index);
  return [
    ...order.map((replica) => ({ action: 'start' as const, replica })),
    ...order.reverse().map((replica) => ({ action: 'stop' as const, replica })),
  ];
}
