"""Azure Functions entry point (v2 programming model): registers the three timer blueprints."""

from __future__ import annotations

import logging

import azure.functions as func

from calendar_status import bp as calendar_bp
from sync_contacts import bp as contacts_bp
from sync_users import bp as users_bp

# The host resolves %NEXXT365_*_SCHEDULE% from the app settings: their defaults are in infra/main.bicep
# and local.settings.example.json, not here.
# Azure SDK HTTP logging would print request headers; keep it at WARNING.
logging.getLogger("azure.core.pipeline.policies.http_logging_policy").setLevel(logging.WARNING)

app = func.FunctionApp()
app.register_functions(users_bp)
app.register_functions(contacts_bp)
app.register_functions(calendar_bp)
