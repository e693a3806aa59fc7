"""Makes the workspace's default datastore as an empty local folder, datastore/.

Nothing is read from it: the first step takes its numbers as arguments. Each step writes its two
results as files (PipelineData with is_directory=False) below datastore/azureml/<step>/, where
Azure ML puts a step's outputs (azureml/<run>/<name>). The folder has to exist before the first
run because amlnode needs an upload reference's path to exist.
"""
import os

os.makedirs("datastore", exist_ok=True)
