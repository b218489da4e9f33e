"""Models built on lenapk's engine: the lenalidomide-CLL flagship."""

from .cll import LenalidomideCLL, label_rule

__all__ = ["LenalidomideCLL", "label_rule"]
