"""nexxt365 engine: everything the Azure Functions, the CLI and the tests share."""

__version__ = "0.1.0"
