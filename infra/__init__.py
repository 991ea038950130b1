"""The Pulumi program that ships the service to Kubernetes; it knows the service by its contract."""
