"""Azure Functions entry point (v2 programming model): registers the three timer blueprints."""

from __future__ import annotations

import logging
import os

import azure.functions as func

from calendar_status import bp as calendar_bp
from shared.settings import DEFAULT_SCHEDULES
from sync_contacts import bp as contacts_bp
from sync_users import bp as users_bp

# Schedules are app-setting expressions; give them their documented defaults when unset.
for _name, _default in DEFAULT_SCHEDULES.items():
    os.environ.setdefault(_name, _default)

# Azure SDK HTTP logging would print request headers; keep it at WARNING.
logging.getLogger("azure.core.pipeline.policies.http_logging_policy").setLevel(logging.WARNING)

app = func.FunctionApp()
app.register_functions(users_bp)
app.register_functions(contacts_bp)
app.register_functions(calendar_bp)
