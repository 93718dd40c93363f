"""Pure domain: models, policies, state machines and errors. Imports no azure.* and does no I/O."""
