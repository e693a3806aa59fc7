"""Lays out the workspace's blob store, workspaceblobstore, as a local folder, datastore/.

- datastore/20newsgroups/20news.pkl: cell 13's upload_files(files=['20news.pkl'],
  target_path='20newsgroups'). The notebook pickles the 20 newsgroups training set; the script only
  prints the path it is mounted at, so a small pickle of two documents stands for it.
- datastore/dataset/est_step/output/: the default place of cell 14's OutputFileDatasetConfig()
  (dataset/{run-id}/{output-name}), made empty here because amlnode needs an upload reference's
  folder to exist before the run.
"""
import os
import pickle

os.makedirs("datastore/20newsgroups", exist_ok=True)
with open("datastore/20newsgroups/20news.pkl", "wb") as f:
    pickle.dump({"data": ["From: a@example.org", "From: b@example.org"], "target": [0, 1]}, f,
                protocol=4)
os.makedirs("datastore/dataset/est_step/output", exist_ok=True)
