"""Objective-term registry: recipe name -> ``Term`` class.

:data:`TERMS` holds the built-in terms; :data:`TERM_REGISTRY` adds installed packages' entry
points (group ``jepactl.objectives``) and dotted paths (``type: mylab.terms:Curvature``), see
:mod:`jepactl.plugins` and docs/extending.md.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import nn

from jepactl.objectives.action import ActionConditioned
from jepactl.objectives.base import GridView, ModelDims, StepContext, Term
from jepactl.objectives.dynamics import LTC, Delta, LatentDynamics, Spectral
from jepactl.objectives.factorized import FWMOrth, FWMStatic, HardWeightedPrediction
from jepactl.objectives.jepa import ContextLoss, PredictionLoss, distance_weights
from jepactl.objectives.kinematic import Kinematic
from jepactl.objectives.physics import Hamiltonian, VelGate
from jepactl.objectives.sigreg import SIGReg
from jepactl.plugins import GROUPS, Registry

TERMS: dict[str, type[Term]] = {
    "jepa": PredictionLoss,
    "jepa_context": ContextLoss,
    "kinematic": Kinematic,
    "sigreg": SIGReg,
    "hamiltonian": Hamiltonian,
    "velgate": VelGate,
    "delta": Delta,
    "ld": LatentDynamics,
    "spectral": Spectral,
    "ltc": LTC,
    "fwm_static": FWMStatic,
    "fwm_orth": FWMOrth,
    "hw_jepa": HardWeightedPrediction,
    "ac": ActionConditioned,
}
#: Built-in terms, entry points and dotted paths.
TERM_REGISTRY: Registry[type[Term]] = Registry("objective term", GROUPS["objectives"], TERMS, Term)


def build_terms(specs: Mapping[str, Mapping[str, Any]], dims: ModelDims) -> nn.ModuleDict:
    """One ``Term`` per recipe entry (``{name: {type?: registry name, **params}}``), with its
    heads built for the model's ``dims``."""
    terms = nn.ModuleDict()
    for name, params in specs.items():
        params = dict(params)
        term = TERM_REGISTRY.get(params.pop("type", name), f"objective.terms.{name}")(**params)
        term.name = name
        term.setup(dims)
        terms[name] = term
    return terms


__all__ = [
    "TERMS",
    "TERM_REGISTRY",
    "ContextLoss",
    "GridView",
    "ModelDims",
    "PredictionLoss",
    "StepContext",
    "Term",
    "build_terms",
    "distance_weights",
]
