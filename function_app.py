"""Azure Functions entry point (v2 programming model): registers the function folder of every sync in
the registry (shared/sync/base.py), each with its timer and its queue trigger."""

from __future__ import annotations

import importlib
import logging

import azure.functions as func

from shared.sync.base import syncs

# The host resolves %NEXXT365_*_SCHEDULE% from the app settings: their defaults are in infra/main.bicep
# and local.settings.example.json, not here.
# Azure SDK HTTP logging would print request headers; keep it at WARNING.
logging.getLogger("azure.core.pipeline.policies.http_logging_policy").setLevel(logging.WARNING)

app = func.FunctionApp()
for spec in syncs():
    app.register_functions(importlib.import_module(spec.function).bp)
