"""lipkit: language-image pre-training and evaluation. `lipkit.load(SPEC)` loads a trained model
(see lipkit.loading); the rest lives in the subpackages. Importing lipkit stays cheap."""


def __getattr__(name: str):
    if name == "load":
        from lipkit.loading import load

        return load
    raise AttributeError(f"module 'lipkit' has no attribute {name!r}")
