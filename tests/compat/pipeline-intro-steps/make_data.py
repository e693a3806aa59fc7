"""Lays out the workspace's default datastore (def_blob_store) as a local folder, datastore/.

- datastore/titanic/Titanic.csv: the file both DataReference("test_data", path_on_datastore=
  "titanic/Titanic.csv") and the DataPath of the "compare_data" PipelineParameter name. The
  notebook uploads the public Titanic CSV; the scripts only print its path, so three rows in its
  columns stand for it.
- datastore/azureml/<step>/<name>/: where each PipelineData output of the data-dependency pipeline
  lives (azureml/<producing run>/<name> on Azure ML), made empty here because amlnode needs an
  upload reference's folder to exist before the run.
"""
import os

os.makedirs("datastore/titanic", exist_ok=True)
with open("datastore/titanic/Titanic.csv", "w") as f:
    f.write("PassengerId,Survived,Pclass,Name,Sex,Age,SibSp,Parch,Ticket,Fare,Cabin,Embarked\n"
            '1,0,3,"Braund, Mr. Owen Harris",male,22,1,0,A/5 21171,7.25,,S\n'
            '2,1,1,"Cumings, Mrs. John Bradley (Florence Briggs Thayer)",female,38,1,0,'
            "PC 17599,71.2833,C85,C\n"
            '3,1,3,"Heikkinen, Miss. Laina",female,26,0,0,STON/O2. 3101282,7.925,,S\n')
for step, name in (("trainStep", "processed_data1"), ("extractStep", "processed_data2"),
                   ("compareStep", "processed_data3")):
    os.makedirs(f"datastore/azureml/{step}/{name}", exist_ok=True)
