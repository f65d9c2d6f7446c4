"""init() raises: the worker must not boot, and the log must say why."""


def init():
    raise FileNotFoundError("model.pkl is not in AZUREML_MODEL_DIR")


def run(data):
    return data
