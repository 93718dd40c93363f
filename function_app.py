"""The Function App: creates the app and registers the blueprints. Nothing else happens here.

Function keys (AuthLevel.FUNCTION) are the default for every HTTP trigger: a second layer in Azure on top
of the caller identity checks; endpoints that must be anonymous (health, openapi) say so themselves.
"""

import azure.functions as func

from shared.entrypoints.index import (
    audit_bp,
    compliance_bp,
    expiry_bp,
    health_bp,
    openapi_bp,
    revocations_bp,
    rotation_bp,
    secrets_bp,
)

app = func.FunctionApp(http_auth_level=func.AuthLevel.FUNCTION)
app.register_functions(health_bp)
app.register_functions(openapi_bp)
app.register_functions(audit_bp)
app.register_functions(rotation_bp)
app.register_functions(secrets_bp)
app.register_functions(expiry_bp)
app.register_functions(revocations_bp)
app.register_functions(compliance_bp)
