"""Lays out the workspace's default datastore as a local folder, datastore/, for job.yml.

- datastore/script-run/iris.csv: cell 13's upload_files(files=['iris.csv'],
  target_path='script-run/'), a copy of the companion iris.csv (the repository's own file; the
  script copies it byte for byte).
- datastore/sample/outputdataset/: the destination of cell 15's
  OutputFileDatasetConfig(destination=(def_blob_store, 'sample/outputdataset')). It is made empty
  here because amlnode needs an upload reference's folder to exist before the run.
"""
import os
import shutil

os.makedirs("datastore/script-run", exist_ok=True)
shutil.copyfile("iris.csv", "datastore/script-run/iris.csv")
os.makedirs("datastore/sample/outputdataset", exist_ok=True)
