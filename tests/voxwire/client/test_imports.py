"""The SDK and the CLI stay clear of the gateway: importing them loads no ``gateway`` module
(the gateway is imported only when ``voxwire gateway`` or ``voxwire keys`` runs)."""

from __future__ import annotations

import subprocess
import sys


def test_the_sdk_and_the_cli_import_no_gateway_module():
    code = (
        "import sys, voxwire.client, voxwire.cli; voxwire.cli.build_parser(); "
        "print(sorted(m for m in sys.modules if m == 'gateway' or m.startswith('gateway.')))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert out.stdout.strip() == "[]"
