"""The installed layout: one `flrd` namespace, lean edge-client imports."""

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def run_outside_repo(code: str, tmp_path: Path) -> str:
    # A clean environment: in-process Ray (other tests) may have put the repo on PYTHONPATH.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_all_namespaces_import_from_outside_the_repo(tmp_path):
    out = run_outside_repo(
        "import json, flrd.theory, flrd.strategies, flrd.clients, flrd.simulations, flrd.codecs\n"
        "print(json.dumps({m.__name__: list(m.__path__) for m in "
        "(flrd.theory, flrd.strategies, flrd.clients, flrd.simulations)}))",
        tmp_path,
    )
    paths = json.loads(out)
    assert paths["flrd.clients"][0].endswith("clients")
    assert paths["flrd.strategies"][0].endswith("strategies")


def test_core_and_client_imports_stay_lean(tmp_path):
    out = run_outside_repo(
        "import sys, flrd.theory, flrd.codecs, flrd.policy, flrd.clients\n"
        "print(sorted(m for m in ('torchvision', 'matplotlib', 'ray') if m in sys.modules))",
        tmp_path,
    )
    assert out.strip() == "[]"


def test_top_level_folder_names_are_not_installed(tmp_path):
    out = run_outside_repo(
        "import importlib.util as u\n"
        "print([n for n in ('clients', 'strategies', 'simulations') if u.find_spec(n)])",
        tmp_path,
    )
    assert out.strip() == "[]"
