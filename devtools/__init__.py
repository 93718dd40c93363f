"""Development tools: local peers (Azurite, Key Vault emulator) and the dev host.

Nothing here is deployed; `.funcignore` excludes this folder from the Function App package.
"""
