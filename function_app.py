"""The Function App: creates the app and registers the blueprints. Nothing else happens here.

Function keys (AuthLevel.FUNCTION) are the default for every HTTP trigger: a second layer in Azure on top
of the caller identity checks; endpoints that must be anonymous (health, openapi) say so themselves.
"""

import azure.functions as func

from shared.entrypoints.audit import bp as audit_bp
from shared.entrypoints.compliance import bp as compliance_bp
from shared.entrypoints.expiry import bp as expiry_bp
from shared.entrypoints.health import bp as health_bp
from shared.entrypoints.openapi import bp as openapi_bp
from shared.entrypoints.revocations import bp as revocations_bp
from shared.entrypoints.rotation import bp as rotation_bp
from shared.entrypoints.secrets import bp as secrets_bp

app = func.FunctionApp(http_auth_level=func.AuthLevel.FUNCTION)
app.register_functions(health_bp)
app.register_functions(openapi_bp)
app.register_functions(audit_bp)
app.register_functions(rotation_bp)
app.register_functions(secrets_bp)
app.register_functions(expiry_bp)
app.register_functions(revocations_bp)
app.register_functions(compliance_bp)
