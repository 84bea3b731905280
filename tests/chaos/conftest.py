# SPDX-License-Identifier: GPL-2.0-or-later
"""The chaos test is opt-in (it takes 10-15 minutes and needs root for
network namespaces): it runs only with FERRY_CHAOS=1. It lives outside
tests/functional so the normal suite never collects it."""

import os

OPTED_IN = os.environ.get("FERRY_CHAOS") == "1"


def pytest_report_header(config):
    if OPTED_IN:
        return "ferry chaos: FERRY_CHAOS=1, running (seed FERRY_CHAOS_SEED, default 1)"
    return "ferry chaos: OPTED OUT - nothing runs unless FERRY_CHAOS=1 (or run bench/chaos)"
