"""Scoring script for the diabetes ridge model, written as for Azure ML (SDK v1)."""

import json
import os

import joblib
import numpy as np

model = None


def init():
    global model
    # AZUREML_MODEL_DIR is the model's folder: azureml-models/<name>/<version>
    path = os.path.join(os.environ["AZUREML_MODEL_DIR"], "model.pkl")
    model = joblib.load(path)


def run(raw_data):
    data = np.array(json.loads(raw_data)["data"], dtype=float)
    return model.predict(data).tolist()
