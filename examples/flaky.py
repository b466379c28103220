"""A task that fails until its Nth attempt (README: "Retries"): ``python flaky.py COUNT N``.

It counts its attempts in the file COUNT and exits 1 until the count reaches N.
"""

from __future__ import annotations

import sys
from pathlib import Path

count, succeed_at = Path(sys.argv[1]), int(sys.argv[2])
attempt = int(count.read_text()) + 1 if count.exists() else 1
count.write_text(str(attempt))
print(f"attempt {attempt}", flush=True)
sys.exit(0 if attempt >= succeed_at else 1)
