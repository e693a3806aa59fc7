# The smallest Azure ML v1 style training script: it reads the run's context from the environment,
# prints a line, and writes a file to ./outputs, exactly as it would on an Azure ML compute node.
import argparse
import os

parser = argparse.ArgumentParser()
parser.add_argument("--greeting", default="hello")
parser.add_argument("--epochs", type=int, default=1)
args = parser.parse_args()

run_id = os.environ["AZUREML_RUN_ID"]
experiment = os.environ["AZUREML_ARM_PROJECT_NAME"]
print(f"{args.greeting} from run {run_id} of experiment {experiment} ({args.epochs} epoch(s))")

os.makedirs("outputs", exist_ok=True)
with open(os.path.join("outputs", "greeting.txt"), "w") as f:
    f.write(f"{args.greeting}, {experiment}\n")
print("wrote outputs/greeting.txt")
