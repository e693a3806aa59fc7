"""Local stand-ins for the notebook's datastore, so that the job file loads.

- datastore/dataset_partition_test/<user>/<season>/<genre>.wav: the six files cell 7 uploads
  (a few bytes each; the entry script only takes their sizes).
- datastore/azureml/summarize-file-size/file_dataset_inferences/: the PipelineData output
  (cell 14), made empty because amlnode needs an upload reference's folder to exist.
"""
import os

FILES = (("user1", "winter", "disco", 11), ("user1", "fall", "orchestra", 13),
         ("user2", "summer", "piano", 7), ("user3", "fall", "spirituality", 17),
         ("user4", "spring", "piano", 7), ("user4", "fall", "piano", 7))
for user, season, genre, size in FILES:
    folder = f"datastore/dataset_partition_test/{user}/{season}"
    os.makedirs(folder, exist_ok=True)
    with open(f"{folder}/{genre}.wav", "wb") as f:
        f.write(b"RIFF" + bytes(size - 4))
os.makedirs("datastore/azureml/summarize-file-size/file_dataset_inferences", exist_ok=True)
