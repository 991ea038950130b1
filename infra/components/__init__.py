"""One ComponentResource per concern: cluster, image, postgres, redis, app, ingress, loadtest."""
