"""pytest setup for the attn Python tests.

The tests import the module as `import attn`. When the package is not installed in the
interpreter running pytest but a build tree has it (build/python/attn), that directory is
put on sys.path so `pytest tests/python` works right after a CMake build.
"""

import importlib.util
import os
import sys

import pytest

_HERE = os.path.dirname(os.path.abspath(__file__))
_ROOT = os.path.dirname(os.path.dirname(_HERE))

# reference.py lives next to the tests.
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)

if importlib.util.find_spec("attn") is None:
    for candidate in (os.environ.get("ATTN_PYTHON_PATH"), os.path.join(_ROOT, "build", "python")):
        if candidate and os.path.isdir(os.path.join(candidate, "attn")):
            sys.path.insert(0, candidate)
            break


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: a long test (tens of seconds); CI runs it, `-m \"not slow\"` skips it")


@pytest.fixture(scope="session")
def model():
    """The default model (SmolLM2-135M-Instruct Q4_1, fetched by scripts/setup.sh), loaded once."""
    import attn

    path = attn.Model.default_path()
    assert os.path.exists(path), f"default model missing at {path}: run scripts/setup.sh"
    return attn.Model.load()
