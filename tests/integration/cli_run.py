"""Run the `nexxt365` command as an operator would, against a world's simulators and Azurite."""

from __future__ import annotations

import io

from shared import cli
from shared.sandbox.azurite import Azurite
from shared.sandbox.world import World
from shared.settings import Settings


def nexxt365(world: World, azurite: Azurite, *argv: str, **settings: str) -> tuple[int, str]:
    """Run the command with the world's app settings (plus `settings`); returns (exit code, stdout)."""
    out = io.StringIO()
    env = {**world.env(azurite.connection_string), **settings}
    return cli.main(list(argv), out=out, settings=Settings(env=env, local={})), out.getvalue()
