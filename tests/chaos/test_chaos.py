# SPDX-License-Identifier: GPL-2.0-or-later
"""50 random operations under random faults, no invariant violation allowed
(tests/chaos/chaos.py does the work; bench/chaos runs it without pytest).

    FERRY_CHAOS=1 [FERRY_CHAOS_SEED=N] [FERRY_CHAOS_OPS=50] [FERRY_BUILD_DIR=build] \\
        /usr/bin/python3 -m pytest -s tests/chaos"""

import os
import sys

import pytest

if os.environ.get("FERRY_CHAOS") != "1":
    pytest.skip("chaos test opted out: set FERRY_CHAOS=1 to run it (10-15 minutes, root)",
                allow_module_level=True)

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import chaos  # noqa: E402


def test_chaos():
    seed = int(os.environ.get("FERRY_CHAOS_SEED", "1"))
    ops = int(os.environ.get("FERRY_CHAOS_OPS", "50"))
    stats, report = chaos.run(seed=seed, ops=ops, keep=bool(os.environ.get("FERRY_KEEP_TMP")),
                              log=lambda m: print(m, flush=True))
    print(report)
    assert stats.operations > 0, report
    assert not stats.violations, report
