// Constants of cluster mode that the flag definitions need without loading the Kubernetes client.
export const DEFAULT_IMAGE = 'ghcr.io/dmctl/dmctl:0.1.0';
