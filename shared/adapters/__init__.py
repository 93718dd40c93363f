"""Adapters: one module per technology, implementing the ports with the Azure SDKs.

Each translates ``azure.core.exceptions`` into the domain errors with ``raise ... from err``.
"""
