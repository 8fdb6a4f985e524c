"""The AWX / ansible-runner tests reuse the fault suite's fleet and its one end-state check
(tests/faults/fault_fleet.py): a refused run must leave every host exactly as the faults demand."""
from __future__ import annotations

import sys
from pathlib import Path

FAULTS = str(Path(__file__).resolve().parents[1] / "faults")
if FAULTS not in sys.path:
    sys.path.insert(0, FAULTS)
