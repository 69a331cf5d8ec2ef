/**
 * Closed sets of names that flags and configuration accept. Plain constants without imports, so
 * the CLI can list them in `cgw start --help` without loading the modules that use them (pino,
 * zod, the balancer).
 */

export const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const;

/** How log lines are written (`--log-format`): auto is pretty on a terminal, JSON otherwise. */
export const LOG_FORMATS = ['auto', 'json', 'pretty'] as const;
export type LogFormat = (typeof LOG_FORMATS)[number];

export const PICKERS = ['round_robin', 'least_request'] as const;

/** Oldest TLS version an HTTPS listener accepts (`--tls-min-version`). */
export const TLS_MIN_VERSIONS = ['TLSv1.2', 'TLSv1.3'] as const;
export type TlsMinVersion = (typeof TLS_MIN_VERSIONS)[number];

/** Whether HTTPS listeners ask for client certificates (`--tls-client-auth`). */
export const TLS_CLIENT_AUTH_MODES = ['none', 'request', 'require'] as const;
export type TlsClientAuthMode = (typeof TLS_CLIENT_AUTH_MODES)[number];

/** What `cgw rollout start` assumes for a flag not given: its help and the rollout schema share them. */
export const ROLLOUT_DEFAULTS = { steps: '5,25,50,75,100', soak: '5m', maxErrorRateIncrease: '0.5', maxP95Increase: '10%', p95Slack: '20ms', minRequests: '100' } as const;
