"""Access: attribute-based policy (who may do what, where), API keys, audit logs, and the
control plane's door that every promotion, deployment, rollback and canary change goes through."""
