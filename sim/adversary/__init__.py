"""Adversaries and the measured trusted base (DESIGN.md, "Measured, not asserted").

``strategies`` compromises one component of a built run with one strategy; ``properties`` checks
authenticity, confidentiality, integrity, freshness after reset and liveness on a finished run from
ground truth; ``sweep`` runs every (component, strategy) pair per trust model and derives each
property's trusted base: the components whose compromise breaks it without anyone noticing.
"""

from sim.adversary.properties import PropertyResult, SecurityProperty, Verdict, Witness, evaluate
from sim.adversary.strategies import NOT_APPLICABLE, Adversary, NotApplicable, install, table
from sim.adversary.sweep import ModelSweep, RunOutcome, attach, run_one, sweep, sweep_model

__all__ = ["NOT_APPLICABLE", "Adversary", "ModelSweep", "NotApplicable", "PropertyResult", "RunOutcome",
           "SecurityProperty", "Verdict", "Witness", "attach", "evaluate", "install", "run_one", "sweep", "sweep_model",
           "table"]
