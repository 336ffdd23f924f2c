"""Simulators of Microsoft Graph and ClearVox Nexxt, and the demo tenant.

Real HTTPS servers on 127.0.0.1, used by the tests, `nexxt365 demo` and bench/.
"""
