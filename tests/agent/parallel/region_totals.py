# A tabular dataset by partition keys: each mini-batch is one region's rows (its files whole, with
# the region and year read from their paths as columns); run() returns one row per region.
import pandas


def init():
    pass


def run(mini_batch):
    return pandas.DataFrame({
        "region": [mini_batch["region"].iloc[0]],
        "years": [",".join(sorted(mini_batch["year"].unique()))],
        "total": [int(mini_batch["amount"].sum())],
        "rows": [len(mini_batch)],
    })
