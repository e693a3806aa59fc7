"""Lays out what the pipeline reads and writes as local folders.

- web/demo/Titanic.csv: the public file Dataset.File.from_files(
  "https://dprepdata.blob.core.windows.net/demo/Titanic.csv") names (cell 9). train.py copies it
  byte for byte and extract.py copies that copy, so three rows in the Titanic columns stand for it.
- datastore/dataset/<step>/<name>/: where each OutputFileDatasetConfig(name=...) writes by default
  on the workspace's default datastore (dataset/{run-id}/{output-name}), made empty here because
  amlnode needs an upload reference's folder to exist before the run.
"""
import os

os.makedirs("web/demo", exist_ok=True)
with open("web/demo/Titanic.csv", "w") as f:
    f.write("PassengerId,Survived,Pclass,Name,Sex,Age,SibSp,Parch,Ticket,Fare,Cabin,Embarked\n"
            '1,0,3,"Braund, Mr. Owen Harris",male,22,1,0,A/5 21171,7.25,,S\n'
            '2,1,1,"Cumings, Mrs. John Bradley (Florence Briggs Thayer)",female,38,1,0,'
            "PC 17599,71.2833,C85,C\n"
            '3,1,3,"Heikkinen, Miss. Laina",female,26,0,0,STON/O2. 3101282,7.925,,S\n')
for step, name in (("trainStep", "processed_data1"), ("extractStep", "processed_data2"),
                   ("compareStep", "processed_data3")):
    os.makedirs(f"datastore/dataset/{step}/{name}", exist_ok=True)
