"""Adapters: one module (or package: ``tables``) per technology, implementing the ports with the Azure SDKs
and the other clients (psycopg, requests); ``environment`` settles what an SDK client would read from the
environment on every request.

Each translates ``azure.core.exceptions`` into the domain errors with ``raise ... from err``.
"""
