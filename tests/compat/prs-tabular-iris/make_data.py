"""Local stand-ins for what the notebook reads from Azure, so that the job runs here.

- iris/iris.csv: the TabularDataset over the iris/ folder of the public "sampledata" container
  (cell 11), with the four feature columns the notebook names (sepal.length ... petal.width);
  150 rows made around the three species' mean measurements (about 4 KB, so that
  mini_batch_size 1KB cuts it into several mini-batches). iris_truth.txt (outside the dataset)
  holds each row's species, for the test to check the predictions against.
- iris_model.pkl/iris_model.pkl: the model registered as iris-prs (cell 16), a pickled
  scikit-learn classifier there. scikit-learn cannot be installed beside the Boost 1.81 headers
  this project builds with (Debian 12's python3-scipy needs pythran, which needs libboost1.74-dev),
  so the model is a stand-in: a nearest-centroid classifier with scikit-learn's predict(X)
  (iris_stand_in_model.py, written into Code/ beside the entry script so that unpickling finds
  it, as the real model's module is found in its environment).
- datastore/azureml/example-iris/inferences/: the PipelineData output (cell 13), made empty because
  amlnode needs an upload reference's folder to exist.
"""
import os
import pickle
import sys

MODEL = '''"""A stand-in for the scikit-learn classifier the sample registers as iris-prs (see
make_data.py): a nearest-centroid classifier over the first four columns, with predict(X)."""
import numpy


class NearestCentroid:
    def __init__(self, centroids, labels):
        self.centroids = numpy.asarray(centroids, dtype=float)
        self.labels = numpy.asarray(labels, dtype=object)

    def predict(self, X):
        features = numpy.asarray(X, dtype=float)[:, :4]
        distances = ((features[:, None, :] - self.centroids[None, :, :]) ** 2).sum(axis=2)
        return self.labels[distances.argmin(axis=1)]
'''

SPECIES = {"Setosa": (5.0, 3.4, 1.5, 0.2), "Versicolor": (5.9, 2.8, 4.3, 1.3),
           "Virginica": (6.6, 3.0, 5.6, 2.0)}

os.makedirs("iris", exist_ok=True)
names = list(SPECIES)
with open("iris/iris.csv", "w") as data, open("iris_truth.txt", "w") as truth:
    data.write('"sepal.length","sepal.width","petal.length","petal.width"\n')
    for i in range(150):
        name = names[i % 3]
        offset = ((i * 7) % 5 - 2) / 10  # -0.2 .. 0.2: well inside each species' cluster
        values = [round(v + offset, 1) for v in SPECIES[name]]
        data.write(",".join(f"{v:.1f}" for v in values) + "\n")
        truth.write(name + "\n")
with open("Code/iris_stand_in_model.py", "w") as f:
    f.write(MODEL)
sys.path.insert(0, "Code")
from iris_stand_in_model import NearestCentroid  # noqa: E402

os.makedirs("iris_model.pkl", exist_ok=True)
with open("iris_model.pkl/iris_model.pkl", "wb") as f:
    pickle.dump(NearestCentroid(list(SPECIES.values()), names), f, protocol=4)
os.makedirs("datastore/azureml/example-iris/inferences", exist_ok=True)
