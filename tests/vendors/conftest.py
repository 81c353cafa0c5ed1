"""tests/vendors/: differential tests of vendor quantizers against torchao's prepare/convert.

Their packages live in the overlay ``.venv-vendors/`` that ``.ci/vendors.sh`` builds (see
``_overlay.py``). It is appended to ``sys.path`` here, before this folder's test modules are
collected, so the tests need no environment variable or wrapper. A module that needs the
overlay marks itself ``vendor`` and imports its packages through ``require_vendor``.
"""

from __future__ import annotations

from tests.vendors._overlay import add_overlay_to_path

add_overlay_to_path()
