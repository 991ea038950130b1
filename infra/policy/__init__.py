"""CrossGuard policy pack: the blueprint's rules, enforced at `pulumi preview --policy-pack`."""
