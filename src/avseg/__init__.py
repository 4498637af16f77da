__version__ = "0.1.0"


def __getattr__(name: str):
    """Lazy exports: `avseg.Predictor` imports torch only when it is first used."""
    if name == "Predictor":
        from avseg.inference.predictor import Predictor

        return Predictor
    raise AttributeError(f"module 'avseg' has no attribute {name!r}")
