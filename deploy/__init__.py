"""Deployment tooling run on the deployer's machine (azd hooks, role grants): never deployed
(.funcignore)."""
