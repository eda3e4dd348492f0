"""Infrastructure pull requests: states, principals, the store, checks and the lifecycle service."""
