"""Train the example model: a ridge regression on scikit-learn's bundled diabetes data.

Run once before building (the README's main command does it): writes model.pkl here.
The data set ships inside scikit-learn, so training needs no network.
"""

from pathlib import Path

import joblib
from sklearn.datasets import load_diabetes
from sklearn.linear_model import Ridge

X, y = load_diabetes(return_X_y=True)
model = Ridge(alpha=0.1).fit(X, y)
out = Path(__file__).with_name("model.pkl")
joblib.dump(model, out)
print(f"wrote {out} (R^2 on training data: {model.score(X, y):.3f})")
