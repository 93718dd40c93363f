"""Shared test configuration. Each tier has its own conftest with its fixtures."""
