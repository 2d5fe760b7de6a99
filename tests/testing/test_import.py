"""rxstate.testing and its modules import without pytest; the old names stay importable."""

from __future__ import annotations

import subprocess
import sys
import textwrap

BLOCK_PYTEST = """
import sys
class _NoPytest:
    def find_spec(self, name, path=None, target=None):
        if name == "pytest" or name.startswith(("pytest.", "_pytest")):
            raise ImportError(f"{name} is not importable here")
        return None
sys.meta_path.insert(0, _NoPytest())
"""


def test_the_testing_modules_import_with_pytest_unimportable():
    code = BLOCK_PYTEST + textwrap.dedent("""
        import rxstate.testing
        from rxstate.testing import checkers, faults, linearizability, recorder, timeline, workload, record
        from rxstate.testing import Backend, EmbeddedServer, LocalCluster, History
        try:
            import rxstate.testing.plugin
        except ImportError as exc:
            print("plugin needs pytest:", exc)
        assert "pytest" not in sys.modules and "_pytest" not in sys.modules
        print("ok", Backend.__name__, LocalCluster.__name__, EmbeddedServer.__name__)
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "ok Backend LocalCluster EmbeddedServer" in done.stdout
    assert "plugin needs pytest" in done.stdout  # the fixtures, and only they, need pytest


def test_the_fixtures_come_from_the_plugin_module(pytestconfig):
    plugin = pytestconfig.pluginmanager.get_plugin("rxstate.testing")
    assert plugin is not None and plugin.__name__ == "rxstate.testing.plugin"
    assert hasattr(plugin, "rx_workload") and hasattr(plugin, "rx_backend")
