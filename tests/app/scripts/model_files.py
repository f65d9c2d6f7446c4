"""Two registered models read through AZUREML_MODEL_DIR, laid out as Azure ML lays them out.

With several models AZUREML_MODEL_DIR is the models folder: a file model is at
<name>/<version>/<its file name>, a folder model at <name>/<version>/<its folder name>/.
"""

import json
import os


def init():
    global greeting, table
    model_dir = os.getenv("AZUREML_MODEL_DIR")
    with open(os.path.join(model_dir, "greeting", "1", "greeting.txt")) as f:
        greeting = f.read().strip()
    with open(os.path.join(model_dir, "lookup", "2", "lookup", "table.json")) as f:
        table = json.load(f)


def run(raw_data):
    key = json.loads(raw_data)["key"]
    return {"greeting": greeting, "key": key, "value": table.get(key)}
