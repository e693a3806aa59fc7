"""Local copies of the public files the notebook's datasets are made from.

- web/demo/Titanic.csv: https://dprepdata.blob.core.windows.net/demo/Titanic.csv, the default of
  both PipelineParameters (cell 11). Three rows in the Titanic columns stand for it.
- web/iris.csv: the iris.csv of cell 24 (raw.githubusercontent.com/Azure/MachineLearningNotebooks/
  4e7b3784.../train-dataset/iris.csv), which cell 25 passes for both parameters. Three rows in its
  columns stand for it.
The script prints the file and the DataFrame pandas reads from it; small files keep that short.
"""
import os

os.makedirs("web/demo", exist_ok=True)
with open("web/demo/Titanic.csv", "w") as f:
    f.write("PassengerId,Survived,Pclass,Name,Sex,Age,SibSp,Parch,Ticket,Fare,Cabin,Embarked\n"
            '1,0,3,"Braund, Mr. Owen Harris",male,22,1,0,A/5 21171,7.25,,S\n'
            '2,1,1,"Cumings, Mrs. John Bradley (Florence Briggs Thayer)",female,38,1,0,'
            "PC 17599,71.2833,C85,C\n"
            '3,1,3,"Heikkinen, Miss. Laina",female,26,0,0,STON/O2. 3101282,7.925,,S\n')
with open("web/iris.csv", "w") as f:
    f.write("sepal_length,sepal_width,petal_length,petal_width,species\n"
            "5.1,3.5,1.4,0.2,Iris-setosa\n"
            "7.0,3.2,4.7,1.4,Iris-versicolor\n"
            "6.3,3.3,6.0,2.5,Iris-virginica\n")
