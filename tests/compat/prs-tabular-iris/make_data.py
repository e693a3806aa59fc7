"""Local stand-ins for what the notebook reads from Azure, so that the job file loads.

- iris/iris.csv: the TabularDataset over the iris/ folder of the public "sampledata" container
  (cell 11), with the feature columns the notebook names (sepal.length ... variety); three rows.
- iris_model.pkl/iris_model.pkl: the model registered as iris-prs (cell 16), a pickled
  scikit-learn classifier there; here a pickled dict, since the run is refused before the entry
  script would load it.
- datastore/azureml/example-iris/inferences/: the PipelineData output (cell 13), made empty because
  amlnode needs an upload reference's folder to exist.
"""
import os
import pickle

os.makedirs("iris", exist_ok=True)
with open("iris/iris.csv", "w") as f:
    f.write('"sepal.length","sepal.width","petal.length","petal.width","variety"\n'
            '5.1,3.5,1.4,.2,"Setosa"\n7,3.2,4.7,1.4,"Versicolor"\n6.3,3.3,6,2.5,"Virginica"\n')
os.makedirs("iris_model.pkl", exist_ok=True)
with open("iris_model.pkl/iris_model.pkl", "wb") as f:
    pickle.dump({"stand_in_for": "a scikit-learn 0.22 classifier"}, f, protocol=4)
os.makedirs("datastore/azureml/example-iris/inferences", exist_ok=True)
