"""Test-wide settings.

Hypothesis: no per-example deadline (a 2-core CI machine under load would turn slow examples into
failures that say nothing about the code), and in CI (the CI environment variable set) a derandomized
search, so that a run's verdict depends on the code alone. Locally the search stays random and keeps
finding new cases; a failure prints its reproduction blob.
"""

from __future__ import annotations

import os

from hypothesis import settings

settings.register_profile("dev", deadline=None, print_blob=True)
settings.register_profile("ci", deadline=None, print_blob=True, derandomize=True)
settings.load_profile("ci" if os.environ.get("CI") else "dev")
