"""An HTTP-only app that answers with the request headers it saw (tests/integration/test_dev_host.py)."""

import json

import azure.functions as func

app = func.FunctionApp(http_auth_level=func.AuthLevel.ANONYMOUS)


@app.route(route="headers")
def headers(req: func.HttpRequest) -> func.HttpResponse:
    seen = {name.lower(): value for name, value in req.headers.items()}
    return func.HttpResponse(json.dumps(seen), mimetype="application/json")
