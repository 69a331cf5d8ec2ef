/** A registered instance of service `web` on 127.0.0.1, as the health watch reports it. */
import type { HealthStatus, ServiceInstance } from '../../src/core/types.ts';

export interface InstanceSpec {
  readonly port: number;
  readonly tags?: string[];
  readonly status?: HealthStatus;
  readonly passing?: number;
}

export function webInstance({ port, tags = [], status = 'passing', passing = 1 }: InstanceSpec): ServiceInstance {
  return {
    id: `web-${port}`,
    service: 'web',
    node: 'node-1',
    address: '127.0.0.1',
    port,
    tags,
    weights: { passing, warning: 1 },
    checks: [{ id: `service:web-${port}`, status, serviceId: `web-${port}` }],
  };
}
