"""safefcgi runs without flup6: only the tests use it, as the baseline that shows its bugs."""

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

IMPORT_EVERY_MODULE = """
import importlib, pkgutil, sys
import safefcgi
for module in pkgutil.walk_packages(safefcgi.__path__, "safefcgi."):
    if not module.name.endswith(".__main__"):  # runs the command line
        importlib.import_module(module.name)
print(",".join(sorted(name for name in sys.modules if name.split(".")[0] == "flup")))
"""


def test_no_safefcgi_module_imports_flup():
    result = subprocess.run([sys.executable, "-c", IMPORT_EVERY_MODULE], cwd=REPO,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == ""
