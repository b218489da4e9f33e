"""Models built on lenapk's engine: the lenalidomide-CLL flagship (:mod:`lenapk.models.cll`) and
a small two-compartment PK / indirect-response example (:mod:`lenapk.models.turnover`)."""

from .cll import LenalidomideCLL

__all__ = ["LenalidomideCLL"]
