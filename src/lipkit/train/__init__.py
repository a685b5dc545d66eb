from lipkit.train.loop import NonFiniteLossError, RunDirError, TrainResult, train

__all__ = ["NonFiniteLossError", "RunDirError", "TrainResult", "train"]
